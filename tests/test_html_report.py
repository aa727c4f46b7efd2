"""``lcbench report``: one self-contained static page with every section, every text escaped, a predicted row
marked, the recommendation behind one swappable function — and loaded in headless Chromium (Debian's
``chromium``; ``.ci/run`` installs it) with no console message, sortable tables, and a screenshot in which
every section is drawn.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from harness.cli import main
from harness.results import html_report
from harness.results.records import public_view
from synthetic_results import report_records, store_of

HOSTILE = "<script>alert('pwned')</script> & \"quotes\""


def _records() -> list[dict]:
    recs = report_records()
    hostile = dict(next(r for r in recs if r["status"] == "invalid"))
    hostile.update(key="hostile", reason=HOSTILE, seqlen=8192)
    return recs + [hostile]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = tmp_path_factory.mktemp("report")
    db = store_of(work / "r.db", _records())
    assert main(["report", str(db), "-o", str(work / "out")]) == 0
    return db, work / "out" / "index.html"


@pytest.fixture(scope="module")
def page(built) -> str:
    return built[1].read_text()


def _section(page: str, key: str) -> str:
    return page.split(f'<section id="{key}">', 1)[1].split("</section>", 1)[0]


def test_page_has_every_section_and_needs_no_network(page):
    for key in html_report.SECTIONS:
        assert f'<section id="{key}">' in page, key
    assert not re.search(r"(?i)https?://|<link\b|\bsrc=[\"'](?!data:)|@import|url\(", page)
    images = re.findall(r'<img [^>]*src="([^"]{0,30})', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)


def test_every_text_is_escaped(page):
    assert "<script>alert" not in page
    escaped = "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;"
    assert escaped in _section(page, "failures")


def test_every_table_show_prints_is_on_the_page(built, page):
    db, _ = built
    from harness.results.store import ResultStore

    tables = html_report.shown_tables(ResultStore(db, create=False).records(), str(db))
    assert len(tables) > 3
    section = _section(page, "tables")
    for table in tables:
        assert f"<caption>{html_report.esc(html_report._plain(table.title))}</caption>" in section
    assert section.count('<table class="sortable">') == len(tables)


def test_a_predicted_row_is_labelled_predicted(page):
    rows = re.findall(r'<tr class="predicted">(.*?)</tr>', _section(page, "tables"))
    assert rows and all("predicted (not measured)" in row for row in rows)


def test_failures_machine_and_conventions_are_stated(page):
    failures = _section(page, "failures")
    assert "failed the gate: err 0.3" in failures and "out of memory" in failures and "oom" in failures
    machine = _section(page, "machine")
    assert "abc1234" in machine and "box" in machine and "float32 0.05" in machine
    conventions = _section(page, "conventions")
    assert "4*area*Hq*d" in conventions and "p20-p80" in conventions and "compulsory" in conventions


def test_recommendation_is_lcbench_recommend_s_view_measured_and_predicted_apart():
    views = [public_view(r) for r in _records()]
    section = html_report.recommendation_section(views)
    assert "recommendation" in section and "sdpa" in section
    assert "predicted" in section  # the synthetic file holds predicted rows: their own table


def test_report_of_a_missing_file_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope.db"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope.db" in err and len(err.strip().splitlines()) == 1


# ----- in a real browser -------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the page: after load, the layout of every section, the images, and a sort by the
# "S" column of the first table, one way then the other, as one console line.
PROBE = """<script>
window.addEventListener("load", function () {
  var out = {sections: {}, height: document.documentElement.scrollHeight, images: 0, broken: 0};
  document.querySelectorAll("section").forEach(function (s) {
    var b = s.getBoundingClientRect(); out.sections[s.id] = [b.top + window.scrollY, b.height];
  });
  document.querySelectorAll("img").forEach(function (img) {
    out.images++; if (!img.complete || img.naturalWidth === 0) out.broken++;
  });
  var table = document.querySelector("#tables table.sortable");
  var col = Array.from(table.tHead.rows[0].cells).findIndex(function (th) { return th.textContent === "S"; });
  function column() {
    return Array.from(table.tBodies[0].rows).map(function (r) { return +r.cells[col].textContent; });
  }
  table.tHead.rows[0].cells[col].click(); out.ascending = column();
  table.tHead.rows[0].cells[col].click(); out.descending = column();
  console.log("PROBE " + JSON.stringify(out));
});
</script>"""


def _chromium(url: str, profile, *extra: str) -> tuple[dict, list[str]]:
    """Load ``url`` headless (no network: every host resolves to nothing); (the probe's report, every other
    console message)."""
    argv = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
            "--hide-scrollbars", "--virtual-time-budget=5000", "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}", *extra, url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    messages = re.findall(r":CONSOLE[^\]]*\] \"(.*)\", source:", done.stderr)
    probes = [json.loads(m[len("PROBE "):]) for m in messages if m.startswith("PROBE ")]
    assert len(probes) == 1, done.stderr[-2000:]  # the probe ran, so console messages are being caught
    return probes[0], [m for m in messages if not m.startswith("PROBE ")]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="headless Chromium test runs on Linux")
def test_the_page_loads_in_chromium_without_a_console_message_and_shows_every_section(built, tmp_path):
    import matplotlib.image

    probed = tmp_path / "probed.html"
    probed.write_text(built[1].read_text().replace("</body>", PROBE + "</body>"))
    url = probed.resolve().as_uri()
    layout, messages = _chromium(url, tmp_path / "profile", "--window-size=1400,900", "--dump-dom")
    assert messages == []
    assert layout["images"] > 0 and layout["broken"] == 0
    assert layout["ascending"] == sorted(layout["ascending"]) and layout["descending"] == sorted(
        layout["descending"], reverse=True) and len(set(layout["ascending"])) > 1
    assert set(layout["sections"]) == set(html_report.SECTIONS)
    shot = tmp_path / "page.png"
    _, messages = _chromium(url, tmp_path / "profile", f"--window-size=1400,{layout['height']}",
                            f"--screenshot={shot}")
    assert messages == []
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= layout["height"] - 1
    for key, (top, height) in layout["sections"].items():
        assert height > 0 and top + height <= pixels.shape[0], key
        region = pixels[int(top):int(top + height)]
        assert region.std() > 0.01, f"section {key} is blank in the screenshot"
