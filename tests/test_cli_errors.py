"""Every user mistake on the command line is one line (``error: ...``), exit code 2, no traceback — and says
what was wrong, with what value, and what is allowed. The default tier calls ``main`` in this process (every
mistake that starts nothing); the integration tier runs each in a subprocess, as a user would type it."""

import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from harness.errors import UserError
from suites.schema import load_yaml

FIXTURE = "tests/fixtures/results_v0_1_0.db"
GOOD = "name: s\nmethods: [sdpa]\nmasks: [causal]\nshapes: [{heads_q: 2}]\ndtypes: [float32]\n"


def alias_bomb(levels: int = 9, indent: str = "") -> str:
    """A "billion laughs": each level a list of ten aliases of the one before (10^levels values expanded)."""
    lines = [f"{indent}l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "corrupt.db").write_bytes(b"this is not sqlite")
    other = sqlite3.connect(d / "other.db")
    other.execute("CREATE TABLE x (a)")
    other.commit()
    other.close()
    (d / "dir.db").mkdir()
    (d / "afile").write_text("x")
    (d / "bomb.yaml").write_text(GOOD + "seqlens: [64]\n" + alias_bomb())
    # the bomb inside an unused profile's description: never validated, still refused at once
    (d / "profile_bomb.yaml").write_text(GOOD + "seqlens: [64]\nprofiles:\n  unused:\n    description:\n"
                                         + alias_bomb(indent="      "))
    (d / "huge.yaml").write_text(GOOD + f"seqlens: [{1 << 60}]\n")
    shapes = "shapes: [" + ", ".join(f"{{heads_q: {h}}}" for h in range(1, 6)) + "]"
    (d / "sweep.yaml").write_text(GOOD.replace("shapes: [{heads_q: 2}]", shapes).replace(
        "dtypes: [float32]", "dtypes: [float32, float64, bfloat16]") + f"seqlens: {list(range(64, 64 + 2000))}\n"
        "directions: [fwd, bwd, fwd+bwd, decode]\n")
    (d / "layers0.yaml").write_text("name: s\nworkloads: [{name: hybrid_lm, layers: 0}]\nseqlens: [64]\n")
    return d


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


CASES = [
    # (argv, words the one line must contain)
    ("run quickstrat", ["unknown suite 'quickstrat'", "did you mean 'quickstart'"]),
    ("show /nonexistent/x.db", ["no results at"]),
    ("validate --method flashattn", ["unknown method 'flashattn'"]),
    ("mask sliding_window_causal --seqlen 64 --param window=-3", ["window=-3 is not allowed"]),
    ("run quickstart --max-concurrent 0", ["--max-concurrent", "0", ">= 1"]),
    ("run quickstart --threads 0", ["--threads", "0", ">= 1"]),
    ("run quickstart --threads abc", ["--threads", "'abc'", "integer"]),
    ("run quickstart --run-timeout -5", ["--run-timeout", "-5", "> 0"]),
    ("run quickstart --run-timeout inf", ["--run-timeout", "inf", "finite"]),
    ("run quickstart --memory-budget -1", ["--memory-budget", "-1", "> 0"]),
    ("run quickstart --scheduler slurm", ["--scheduler", "slurm", "ray"]),
    ("run quickstart --bogus", ["unrecognized", "--bogus"]),
    ("run quickstart --profile nope", ["profile", "nope", "smoke"]),
    ("run quickstartt", ["suite", "quickstartt", "quickstart"]),
    ("run nosuch.yaml", ["suite file", "nosuch.yaml", "does not exist"]),
    ("run quickstart --results {d}/corrupt.db", ["corrupt.db", "not a readable lcbench results database"]),
    ("run quickstart --results {d}/other.db", ["other.db", "not lcbench's", "x"]),
    ("run quickstart --results {d}/dir.db", ["dir.db", "is a directory"]),
    ("run quickstart --results {d}/afile/r.db", ["afile", "is a file, not a directory"]),
    ("run quickstart --results /proc/lcbench.db", ["/proc/lcbench.db", "cannot write"]),
    ("run quickstart --address nonsense", ["--address", "nonsense", "HOST:PORT"]),
    ("run quickstart --address 127.0.0.1:{port}", ["--address", "127.0.0.1", "no Ray cluster reachable"]),
    ("show {d}/missing.db", ["no results", "missing.db"]),
    ("show {d}/corrupt.db", ["corrupt.db", "not a readable lcbench results database"]),
    ("show {d}/other.db", ["other.db", "not lcbench's"]),
    ("compare {d}/corrupt.db " + FIXTURE, ["corrupt.db", "not a readable"]),
    ("compare " + FIXTURE + " {d}/missing.db", ["no results", "missing.db"]),
    ("export {d}/corrupt.db", ["corrupt.db", "not a readable"]),
    ("export " + FIXTURE + " --format xml", ["--format", "xml", "csv"]),
    ("export " + FIXTURE + " -o {d}", ["export -o", "is a directory"]),
    ("export " + FIXTURE + " -o {d}/nodir/x.csv", ["export -o", "nodir", "does not exist"]),
    ("export " + FIXTURE + " -o /proc/x.csv", ["export -o", "/proc/x.csv", "cannot write"]),
    ("plot " + FIXTURE + " -o {d}/afile", ["plot -o", "afile", "is a file"]),
    ("plot " + FIXTURE + " -o /proc/plots", ["plot -o", "/proc/plots", "cannot write"]),
    ("plot " + FIXTURE + " --y nonsense -o {d}/plots", ["nonsense"]),
    ("plot {d}/corrupt.db", ["corrupt.db", "not a readable"]),
    ("report {d}/corrupt.db -o {d}/report", ["corrupt.db", "not a readable"]),
    ("report " + FIXTURE + " {d}/missing.db -o {d}/report", ["no results", "missing.db"]),
    ("report " + FIXTURE + " -o {d}/afile", ["report -o", "afile", "is a file"]),
    ("report " + FIXTURE + " -o /proc/report", ["report -o", "/proc/report", "cannot write"]),
    ("report -o {d}/report", ["DB"]),
    ("mask causal --seqlen 0", ["--seqlen", "0", ">= 1"]),
    ("mask causal --seqlen 64 --heads -1", ["--heads", "-1", ">= 1"]),
    ("mask causal --seqlen 64 --block 0", ["--block", "0", ">= 1"]),
    ("mask causal --seqlen 64 --png {d}", ["mask --png", "is a directory"]),
    ("mask causal --seqlen 64 --png /proc/m.png", ["mask --png", "cannot write"]),
    ("mask causall --seqlen 64", ["mask", "causall", "causal"]),
    ("mask sliding_window_causal --seqlen 64 --param window=-5", ["window", "-5"]),
    ("mask sliding_window_causal --seqlen 64 --param left=abc", ["left"]),
    ("mask causal --seqlen 64 --param novalue", ["--param", "novalue", "key=value"]),
    ("mask causal --seqlen 64 --param block=[1,", ["--param", "'block=[1,'", "not valid YAML"]),
    ("mask causal --seqlen 64 --param block=*a", ["--param", "'block=*a'", "not valid YAML", "alias"]),
    # output paths: a full device, an empty path, a directory where a file is expected (and the reverse)
    ("mask causal --seqlen 64 --png /dev/full", ["mask --png", "'/dev/full'", "No space left on device"]),
    ("mask causal --seqlen 64 --png=", ["mask --png", "''", "empty path"]),
    ("mask power --seqlen 1024 --layers 2 --png /dev/full", ["mask --png", "'/dev/full'", "No space left"]),
    ("export " + FIXTURE + " -o /dev/full", ["export -o", "'/dev/full'", "No space left on device"]),
    ("export " + FIXTURE + " -o=", ["export -o", "''", "empty path"]),
    ("plot " + FIXTURE + " -o=", ["plot -o", "''", "empty path"]),
    ("plot " + FIXTURE + " -o /dev/full", ["plot -o", "'/dev/full'", "expected a directory"]),
    # input bombs and oversized sweeps: refused before anything is built
    ("run {d}/bomb.yaml", ["bomb.yaml", "alias bomb", "100000"]),
    ("run {d}/profile_bomb.yaml", ["profile_bomb.yaml", "alias bomb"]),
    ("run {d}/huge.yaml", ["huge.yaml", f"seqlens[0]={1 << 60}", "GiB"]),
    ("run {d}/sweep.yaml", ["sweep.yaml", "expands to 120000 runs", "at most 100000", "seqlens (2000)"]),
    ("run {d}/layers0.yaml", ["layers0.yaml", "workloads[0].layers=0", ">= 1"]),
    ("validate --method nosuch", ["method", "nosuch"]),
    ("validate --mask nosuch", ["mask", "nosuch"]),
    ("list nothing", ["list", "nothing", "methods"]),
    ("bench nothing", ["bench", "nothing", "kernels"]),
]


# Mistakes whose check reaches out of the process (a Ray address), or whose flag re-executes it: subprocess only.
NEEDS_A_PROCESS = ("--address", "--malloc")


def _in_process(args: list[str], capsys) -> tuple[int, str, str]:
    from harness.cli import main

    try:
        code = main(args)
    except SystemExit as e:  # argparse's own exits
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _in_a_subprocess(args: list[str], capsys) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("how", [_in_process, pytest.param(_in_a_subprocess, marks=pytest.mark.integration)],
                         ids=["main", "subprocess"])
@pytest.mark.parametrize("argv,words", CASES, ids=[c[0].split(" {")[0][:60] for c in CASES])
def test_user_mistake_is_one_line_exit_2(argv, words, how, paths, capsys):
    args = argv.format(d=paths, port=_refused_port()).split()
    if how is _in_process and any(flag in args for flag in NEEDS_A_PROCESS):
        pytest.skip("reaches out of the process: the integration tier runs it in a subprocess")
    code, out, err = how(args, capsys)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert code == 2, (code, lines[-5:])
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.integration
def test_plugin_import_failures_name_the_module(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "wrong_plugin.py").write_text("METHODS = ['not a method']\n")
    for module, words in (("no_such_plugin", ["no_such_plugin", "ModuleNotFoundError"]),
                          ("broken_plugin", ["broken_plugin", "boom"]),
                          ("wrong_plugin", ["wrong_plugin", "not an lcbench Method"])):
        env = {"LCBENCH_PLUGINS": module, "PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "list", "methods"], capture_output=True,
                              text=True, timeout=120, env=env, cwd=".")
        lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, lines[-5:]
        assert all(w in lines[0] for w in words), lines[0]


def test_an_alias_bomb_is_refused_at_once():
    """10^12 values when expanded: measured on the composed nodes, never expanded."""
    started = time.perf_counter()
    with pytest.raises(UserError, match="alias bomb"):
        load_yaml("name: s\n" + alias_bomb(levels=12), "bomb.yaml")
    assert time.perf_counter() - started < 2.0
    assert load_yaml("a: &a [1, 2]\nb: *a\n", "ok.yaml") == {"a": [1, 2], "b": [1, 2]}  # plain aliases still work
    with pytest.raises(UserError, match="recursive alias at line 1"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")
