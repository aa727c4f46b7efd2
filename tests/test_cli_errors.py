"""Every user mistake on the command line is one line (``error: ...``), exit code 2, no traceback — and says
what was wrong, with what value, and what is allowed. Runs in a subprocess, as a user would type it."""

import socket
import sqlite3
import subprocess
import sys

import pytest

FIXTURE = "tests/fixtures/results_v0_1_0.db"


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
    return d


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


CASES = [
    # (argv, words the one line must contain)
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
    ("mask causal --seqlen 0", ["--seqlen", "0", ">= 1"]),
    ("mask causal --seqlen 64 --heads -1", ["--heads", "-1", ">= 1"]),
    ("mask causal --seqlen 64 --block 0", ["--block", "0", ">= 1"]),
    ("mask causal --seqlen 64 --png {d}", ["mask --png", "is a directory"]),
    ("mask causal --seqlen 64 --png /proc/m.png", ["mask --png", "cannot write"]),
    ("mask causall --seqlen 64", ["mask", "causall", "causal"]),
    ("mask sliding_window_causal --seqlen 64 --param window=-5", ["window", "-5"]),
    ("mask sliding_window_causal --seqlen 64 --param left=abc", ["left"]),
    ("mask causal --seqlen 64 --param novalue", ["--param", "novalue", "key=value"]),
    ("validate --method nosuch", ["method", "nosuch"]),
    ("validate --mask nosuch", ["mask", "nosuch"]),
    ("list nothing", ["list", "nothing", "methods"]),
    ("bench nothing", ["bench", "nothing", "kernels"]),
]


@pytest.mark.parametrize("argv,words", CASES, ids=[c[0].split(" {")[0][:60] for c in CASES])
def test_user_mistake_is_one_line_exit_2(argv, words, paths):
    args = argv.format(d=paths, port=_refused_port()).split()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, lines[-5:])
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


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
