"""What a person reads of every shipped suite holds up on real results: each suite's smoke profile is run (the
inline scheduler, as a newcomer's first run), then every default figure of its results passes the layout check
(no text outside the figure, no two texts overlapping) and its ``lcbench report`` page loads in headless
Chromium with no console message and every section drawn. Slow: it runs every suite's smoke profile.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.results import html_report
from harness.results.figures import layout_problems
from harness.results.plot import build_figures
from harness.results.store import ResultStore
from suites.loader import available_suites

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SUITES = available_suites()

# Appended to a copy of the page: where each section lies and whether every image decoded, as one console line.
PROBE = """<script>
window.addEventListener("load", function () {
  var out = {sections: {}, images: 0, broken: 0};
  document.querySelectorAll("section").forEach(function (s) {
    var b = s.getBoundingClientRect(); out.sections[s.id] = b.height;
  });
  document.querySelectorAll("img").forEach(function (img) {
    out.images++; if (!img.complete || img.naturalWidth === 0) out.broken++;
  });
  console.log("PROBE " + JSON.stringify(out));
});
</script>"""


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory) -> dict[str, Path]:
    """Every suite's smoke profile, run once: suite name -> its results file."""
    work = tmp_path_factory.mktemp("smoke")
    out = {}
    for name in SUITES:
        db = work / f"{name}.db"
        code = main(["run", name, "--profile", "smoke", "--scheduler", "inline", "--results", str(db), "--quiet"])
        assert code == 0, f"{name}: lcbench run --profile smoke exited {code}"
        out[name] = db
    return out


@pytest.mark.parametrize("suite", SUITES)
def test_every_default_figure_of_a_suite_s_smoke_results_passes_the_layout_check(suite, smoke_results):
    import matplotlib.pyplot as plt

    records = list(ResultStore(smoke_results[suite]).records())
    figures = build_figures(records)
    try:
        problems = {name: layout_problems(fig) for name, fig in figures}
    finally:
        for _, fig in figures:
            plt.close(fig)
    assert figures or not any(r.get("status") == "ok" for r in records), f"{suite}: ok runs but no figure"
    assert {name: p for name, p in problems.items() if p} == {}


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="headless Chromium test runs on Linux")
@pytest.mark.parametrize("suite", SUITES)
def test_a_suite_s_smoke_report_loads_in_chromium_with_every_section_and_no_console_message(
        suite, smoke_results, tmp_path):
    assert main(["report", str(smoke_results[suite]), "-o", str(tmp_path / "out")]) == 0
    page = tmp_path / "probed.html"
    page.write_text((tmp_path / "out" / "index.html").read_text().replace("</body>", PROBE + "</body>"))
    argv = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=5000", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,900",
            f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    messages = re.findall(r":CONSOLE[^\]]*\] \"(.*)\", source:", done.stderr)
    probes = [json.loads(m[len("PROBE "):]) for m in messages if m.startswith("PROBE ")]
    assert len(probes) == 1, done.stderr[-2000:]  # the probe ran, so console messages are being caught
    assert [m for m in messages if not m.startswith("PROBE ")] == []
    layout = probes[0]
    assert layout["broken"] == 0
    assert set(layout["sections"]) == set(html_report.SECTIONS)
    assert all(height > 0 for height in layout["sections"].values()), layout["sections"]
