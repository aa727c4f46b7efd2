"""Plots that hold up: every figure of every kind lays out cleanly (no text outside the figure, no two texts
overlapping), a name keeps its colour and marker across panels and figures, methods share axes, one line per
identity, throughput from zero with its spread, analytic twins beside the measurement, and a footer that says
where the figure comes from and what it left out.

Records are synthetic but shaped like the executor's (``tests/synthetic_results.py``): every kind, predictions,
and failed / invalid / not-run records.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PolyCollection

from harness.results.figures import COLOURS, Palette, Provenance, layout_problems
from harness.results.plot import build_figures
from harness.results.roofline import bytes_moved, intensity
from harness.results.store import ResultStore
from synthetic_results import PROVENANCE, report_records

FIGURE_KINDS = {  # name -> build_figures arguments: the defaults of every kind, and every option
    "defaults": {},
    "several metrics (--y a,b)": {"y": "metrics.tokens_per_s,metrics.ms_per_token"},
    "a plain field vs a text axis": {"x": "method", "y": "time_ms_median"},
    "--by a parameter, --crossings": {"y": "metrics.ms_per_token", "by": "params.pattern", "mark_crossings": True},
    "a metric with an analytic twin": {"y": "metrics.mass"},
    "--crossings on kernels": {"y": "time_ms_median", "mark_crossings": True},
    "a real results file (0.1.0)": {"fixture": True},
}


FIXTURE = Path(__file__).parent / "fixtures" / "results_v0_1_0.db"  # real records, as lcbench 0.1.0 wrote them


def _figures(**kwargs) -> list:
    if kwargs.pop("fixture", False):
        store = ResultStore(FIXTURE, create=False)
        return build_figures(store.records(), provenance=Provenance((str(FIXTURE),), store.sessions()), **kwargs)
    return build_figures(report_records(), provenance=PROVENANCE, **kwargs)


@pytest.fixture(scope="module")
def every_figure():
    built = {name: _figures(**kwargs) for name, kwargs in FIGURE_KINDS.items()}
    yield built
    for figures in built.values():
        for _, fig in figures:
            plt.close(fig)


@pytest.mark.parametrize("kind", FIGURE_KINDS)
def test_every_figure_keeps_its_text_inside_and_apart(kind, every_figure):
    figures = every_figure[kind]
    assert figures
    for name, fig in figures:
        assert layout_problems(fig) == [], name


def test_the_layout_check_sees_text_off_the_figure_and_text_on_text():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_title("a title")
    fig.text(0.9, 0.5, "runs off the right edge of the figure")
    ax.text(0.5, 0.5, "one", transform=ax.transAxes)
    ax.text(0.5, 0.5, "two", transform=ax.transAxes)
    problems = layout_problems(fig)
    plt.close(fig)
    assert any("outside" in p and "runs off" in p for p in problems)
    assert any("overlap" in p and "one" in p and "two" in p for p in problems)


def _lines(fig) -> list:
    return [line for ax in fig.axes for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_a_name_keeps_its_colour_and_marker_in_every_panel_and_figure(every_figure):
    seen: dict[str, set] = {}
    for name, fig in every_figure["defaults"]:
        for line in _lines(fig):
            if line.get_label().endswith(("(analytic)", "(model)")):
                continue  # a twin: its name's colour, its own marker
            who = line.get_label().split(" ")[0]
            seen.setdefault(who, set()).add((line.get_color(), line.get_marker()))
    assert {"sdpa", "blocksparse", "ring_zigzag[sdpa]"} <= set(seen)
    assert all(len(styles) == 1 for styles in seen.values()), {k: v for k, v in seen.items() if len(v) > 1}
    assert len({next(iter(s)) for s in seen.values()}) == len(seen)  # and no two names share one


def test_palette_assigns_from_the_sorted_names_not_the_order_met():
    a, b = Palette.of(["zeta", "alpha", "mid"]), Palette.of(["mid", "zeta", "alpha", "alpha"])
    assert [a.colour(n) for n in ("alpha", "mid", "zeta")] == [b.colour(n) for n in ("alpha", "mid", "zeta")]
    assert a.colour("alpha") == COLOURS[0]


def test_methods_share_a_panel_and_no_line_joins_two_masks(every_figure):
    figures = dict(every_figure["defaults"])
    panel = next(ax for ax in figures["workload_ms_per_token.png"].axes if ax.get_title().startswith("attention_layer"))
    labels = [line.get_label() for line in panel.get_lines() if not line.get_label().startswith("_")]
    assert sorted(labels) == sorted(f"{m} {mask}" for m in ("attention_layer(flavor=tiny,layers=2)[sdpa]",
                                                             "attention_layer(flavor=tiny,layers=2)[blocksparse]")
                                    for mask in ("causal", "sliding_window_causal(window=128)"))
    for fig in figures.values():
        for line in _lines(fig):
            xs = list(line.get_xdata())
            assert xs == sorted(set(xs)), line.get_label()  # one point per x: never a zig-zag


def test_throughput_starts_at_zero_with_its_spread(every_figure):
    fig = dict(every_figure["defaults"])["tflops.png"]
    for ax in fig.axes:
        if ax.has_data():
            assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
            assert any(isinstance(c, PolyCollection) for c in ax.collections)  # the p20-p80 band


def _footer(fig) -> str:
    return fig.get_supxlabel()


def test_footer_names_suite_file_machine_commit_and_what_was_left_out(every_figure):
    figures = dict(every_figure["defaults"])
    text = _footer(figures["tflops.png"]).replace("\n", " ")
    for fact in ("kernels", "results/kernels.db", "box (x86 (2 cores))", "abc1234", "1 invalid", "1 oom",
                 "1 not run"):
        assert fact in text, fact
    assert "without" in _footer(figures["workload_ms_per_token.png"]).replace("\n", " ")  # train_step, mass


def test_analytic_twin_is_drawn_beside_the_measurement(every_figure):
    fig = every_figure["a metric with an analytic twin"][0][1]
    labels = [line.get_label() for line in _lines(fig)]
    assert any(label.endswith("(analytic)") for label in labels) and any("analytic" not in lb for lb in labels)
    assert "workload_mass.png" in dict(every_figure["defaults"])  # and a default figure of its own


def test_crossings_are_listed_and_their_absence_said(every_figure):
    crossing = _footer(every_figure["--by a parameter, --crossings"][0][1]).replace("\n", " ")
    assert re.search(r"from there params\.pattern=LLLS [^;]*< params\.pattern=SSSS", crossing)
    notes: list[str] = []
    build_figures([r for r in report_records() if r.get("workload") == "score_dilution"], y="metrics.mass",
                  mark_crossings=True, notes=notes)
    assert notes and "no two lines cross" in notes[0]


def test_predictions_stay_dashed_and_hollow(every_figure):
    predicted = [line for _, fig in every_figure["defaults"] for line in _lines(fig)
                 if line.get_label().endswith("(predicted)")]
    assert predicted and all(line.get_linestyle() == "--" and line.get_markerfacecolor() == "none"
                             for line in predicted)


def test_roofline_draws_tflops_against_intensity_under_the_session_peak(every_figure):
    fig = dict(every_figure["defaults"])["roofline.png"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("measured GEMM peak: float32 0.05 TFLOP/s" in t for t in texts)
    r = report_records()[0]  # sdpa causal fwd S=256, B1 H4:2 d32, float32
    assert bytes_moved(r) == (2 * 256 * 4 * 32 + 2 * 256 * 2 * 32) * 4
    assert intensity(r) == pytest.approx(r["flops"] / bytes_moved(r))
    assert bytes_moved({**r, "direction": "bwd"}) == 2 * bytes_moved(r)
    assert bytes_moved({**r, "heads_q": None}) is None
