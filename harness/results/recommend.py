"""The answer view: for each configuration, which option is fastest, by how much, and whether that is a tie.

An *option* is what a user chooses: a method, a strategy (with its local method) or a workload variant — the
workload with its named choices (text parameters: ``pattern``, ``softmax_strategy``, the attention method...)
— together with its options. A *configuration* is everything else that identifies a run (mask, length, shape,
dtype, direction, world size, device, a workload's ``flavor`` and numeric parameters...): by default every
identity field whose value varies among the records, or the fields named by ``by`` — an identity field that
varies but is not named becomes part of the option (``--by seqlen`` on a sweep over masks compares each
method on each mask with every other).

Only valid records count (status ``ok``); a model's predictions (``lcbench predict``) are ranked among
themselves, in recommendations of their own marked ``predicted``, never mixed with measurements. Whether the
winner really beats the runner-up is :func:`harness.results.verdict.judge`'s call (the stored p20-p80 spreads,
the 3% rule, the CPU time where the wall clock was contended): ``better``, ``tie`` or ``inconclusive``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from rich.markup import escape
from rich.table import Table

from harness.errors import UserError
from harness.results.records import (
    PARAMS_PREFIX, is_predicted, kind_of, mask_label, source_label, timed,
)
from harness.results.schema import KINDS, number
from harness.results.columns import size
from harness.run import DECODE
from harness.results.verdict import BETTER, INCONCLUSIVE, RULE, SAME, Verdict, judge, time_figure
from harness.status import OK

# Natural orders of values that are not numbers (anything else sorts as text after these).
DIRECTION_ORDER = ("fwd", "bwd", "fwd+bwd", "decode", "prefill", "train_step")


def _shape(record: dict) -> Optional[str]:
    if record.get("heads_q") is None:
        return None
    return f"H{record['heads_q']}:{record.get('heads_kv')} d{record.get('head_dim')}"


# The identity fields of a configuration, in table order: name -> how a record's value reads.
IDENTITY: dict[str, Callable[[dict], object]] = {
    "mask": lambda r: mask_label(r) or None,
    "seqlen": lambda r: r.get("seqlen"),
    "batch": lambda r: r.get("batch"),
    "shape": _shape,
    "dtype": lambda r: r.get("dtype"),
    "direction": lambda r: r.get("direction"),
    "phase": lambda r: r.get("phase"),
    "world_size": lambda r: r.get("world_size"),
    "decode_tokens": lambda r: r.get("decode_tokens") if timed(r) == DECODE else None,
    "device": lambda r: r.get("device"),
}


def _sizes(name: str, value: object) -> bool:
    """Whether a workload parameter sizes the problem (a configuration field: ``flavor``, or a number) rather
    than names a choice (an option: ``pattern=LLLLLLLS``, ``softmax_strategy=ring_zigzag``)."""
    return name == "flavor" or number(value) is not None


def identity(record: dict) -> dict[str, object]:
    """Every identity field of a record with a value: :data:`IDENTITY` and ``params.NAME`` of the workload
    parameters that size the problem (``flavor``, numbers)."""
    fields = {name: read(record) for name, read in IDENTITY.items()}
    fields.update({PARAMS_PREFIX + k: v for k, v in sorted((record.get("params") or {}).items()) if _sizes(k, v)})
    return {k: v for k, v in fields.items() if v is not None}


def choices(record: dict) -> dict[str, str]:
    """The workload parameters that name a choice (the option's; see :func:`_sizes`), as text; one naming the
    record's own method or strategy is left out (the label shows it as ``[attention]``)."""
    kernel = {record.get("method"), record.get("strategy")} - {None}
    return {k: str(v) for k, v in sorted((record.get("params") or {}).items())
            if not _sizes(k, v) and not (isinstance(v, str) and v in kernel)}


def option_label(record: dict, extra: Sequence[str] = (), chosen: Sequence[str] = ()) -> str:
    """What was chosen: ``method``, ``strategy[method]`` or ``workload(choices)[attention]`` — the choices
    named in ``chosen`` (those that vary) —, its options, and the identity fields ``extra`` (those that vary but
    are not part of the configuration) as ``name=value``."""
    fields = identity(record)
    kernel = f"{record['strategy']}[{record.get('method')}]" if record.get("strategy") else record.get("method") or ""
    if kind_of(record) == "workload":
        own = choices(record)
        inner = [f"{k[len(PARAMS_PREFIX):]}={fields[k]}" for k in extra if k.startswith(PARAMS_PREFIX) and k in fields]
        inner += [f"{k}={own[k]}" for k in chosen if k in own]
        label = f"{record.get('workload')}({','.join(inner)})" if inner else str(record.get("workload"))
        label += f"[{kernel}]" if kernel else ""
    else:
        label = kernel
    options = record.get("options") or {}
    if options:
        label += "{" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "}"
    rest = [f"{k}={fields[k]}" for k in extra if not k.startswith(PARAMS_PREFIX) and k in fields]
    return " ".join([label, *rest])


@dataclass(frozen=True)
class Option:
    """One option's figures in a configuration: median time with its p20-p80 spread, CPU time, peak memory."""

    label: str
    median_ms: float
    p20_ms: Optional[float]
    p80_ms: Optional[float]
    cpu_ms: Optional[float]
    peak_mem_bytes: Optional[float]
    key: str


@dataclass(frozen=True)
class Recommendation:
    """The answer for one configuration (``kind``: method, strategy or workload; ``configuration``: (field,
    value) pairs). ``winner``: the fastest option; ``runner_up``: the next (None when only one ran);
    ``margin``: runner-up time / winner time - 1; ``verdict``: the winner judged against the runner-up
    (``better``, ``tie`` or ``inconclusive``, with the reason; None without a runner-up); ``memory``: the
    winner's peak memory in bytes; ``fits``: the fastest option whose peak memory is within ``memory_limit``
    bytes (None without a limit or when none fits); ``predicted``: a model's figures, ``source`` says whose."""

    kind: str
    configuration: tuple[tuple[str, str], ...]
    winner: Option
    runner_up: Optional[Option]
    margin: Optional[float]
    verdict: Optional[Verdict]
    memory: Optional[float]
    fits: Optional[Option]
    predicted: bool
    source: str
    options: int
    memory_limit: Optional[int] = None

    @property
    def answer(self) -> str:
        """One line: ``sdpa (+35% over flex)``, ``tie: sdpa ~ flex``, ``only sdpa ran``."""
        if self.runner_up is None or self.verdict is None:
            return f"only {self.winner.label} ran"
        if self.verdict.verdict == BETTER:
            return f"{self.winner.label} (runner-up {self.runner_up.label} {self.margin:+.0%} slower)"
        word = "tie" if self.verdict.verdict == SAME else "inconclusive"
        return f"{word}: {self.winner.label} ~ {self.runner_up.label}"


def _valid(record: dict) -> bool:
    return record.get("status") == OK or is_predicted(record)


def _sortable(value: object) -> tuple:
    if number(value) is not None:
        return (0, float(value), "")
    text = str(value)
    if text in DIRECTION_ORDER:
        return (1, DIRECTION_ORDER.index(text), text)
    return (2, 0.0, text)


def _by_fields(by: Optional[Sequence[str]], groups: dict[tuple[str, bool], list[dict]]) -> Optional[list[str]]:
    if by is None:
        return None
    known = {name for rs in groups.values() for r in rs for name in identity(r)}
    unknown = [b for b in by if b not in known and b not in IDENTITY]
    if unknown:
        raise UserError(f"--by {','.join(unknown)}: not an identity field of these results "
                        f"(known: {', '.join(sorted(known | set(IDENTITY)))})")
    return list(by)


def _option(record: dict, label: str) -> Option:
    fig = time_figure(record)
    assert fig is not None
    return Option(label, fig.median, fig.p20, fig.p80, fig.cpu, number(record.get("peak_mem_bytes")), record["key"])


def _configurations(records: list[dict], chosen: Optional[list[str]]) -> dict[tuple, dict[str, dict]]:
    """The records of one kind and source by (configuration, source label), then by option label, one record
    each (the latest): the configuration's fields are ``chosen`` (those the records have) or every field that
    varies; a varying field not among them goes into the option label."""
    values: dict[str, set[str]] = {}
    for r in records:
        for name, value in identity(r).items():
            values.setdefault(name, set()).add(str(value))
    varying = [n for n in values if len(values[n]) > 1]
    fields = [n for n in (chosen if chosen is not None else varying) if n in values]
    extra = [n for n in varying if n not in fields]
    named: dict[str, set[str]] = {}
    for r in records:
        for name, value in choices(r).items():
            named.setdefault(name, set()).add(value)
    varying_choices = [n for n in sorted(named) if len(named[n]) > 1 or any(n not in choices(r) for r in records)]
    configs: dict[tuple, dict[str, dict]] = {}
    for r in records:
        own = identity(r)
        config = tuple((n, str(own.get(n, ""))) for n in fields)
        # beyond the fields, the source (a prediction's cluster and model) keeps different models apart
        latest = configs.setdefault((config, source_label(r)), {})
        label = option_label(r, extra, varying_choices)
        # one figure per option: the latest measurement (a run stored in two of the files, say)
        if label not in latest or (r.get("finished_at") or 0) >= (latest[label].get("finished_at") or 0):
            latest[label] = r
    return configs


def _recommendation(kind: str, config: tuple, source: str, by_label: dict[str, dict],
                    memory_limit: Optional[int]) -> Recommendation:
    ranked = sorted(by_label.items(), key=lambda kv: kv[1]["time_ms_median"])
    options = [_option(r, label) for label, r in ranked]
    winner, runner_up = options[0], options[1] if len(options) > 1 else None
    verdict = margin = None
    if runner_up is not None:
        # the winner (lower median) against the runner-up: better, tie or inconclusive, never worse
        base, new = time_figure(ranked[1][1]), time_figure(ranked[0][1])
        assert base is not None and new is not None
        if base.median > 0:
            verdict = judge(base, new, "lower", ("runner-up", "fastest"))
        else:  # both 0 ms (the runner-up is not faster than the winner)
            verdict = Verdict(SAME, 1.0, "both medians are 0 ms")
        margin = runner_up.median_ms / winner.median_ms - 1 if winner.median_ms > 0 else None
    fits = None
    if memory_limit is not None:
        fits = next((o for o in options if o.peak_mem_bytes is not None and o.peak_mem_bytes <= memory_limit), None)
    return Recommendation(kind, config, winner, runner_up, margin, verdict, winner.peak_mem_bytes, fits,
                          is_predicted(ranked[0][1]), source, len(options), memory_limit)


def recommend(records: Sequence[dict], by: Optional[Sequence[str]] = None,
              memory_limit: Optional[int] = None) -> list[Recommendation]:
    """One :class:`Recommendation` per configuration of the valid records (module docstring), measured and
    predicted apart, ordered by kind, source, then configuration (numbers numerically, directions in their
    natural order). ``by``: the configuration's identity fields (default: every one that varies within the
    kind); ``memory_limit``: bytes an option may peak at to ``fit``. An option measured more than once in a
    configuration (the same run in two files) counts with its latest record. Raises UserError for an unknown
    ``by``."""
    groups: dict[tuple[str, bool], list[dict]] = {}
    for r in records:
        if _valid(r) and time_figure(r) is not None:
            groups.setdefault((kind_of(r), is_predicted(r)), []).append(r)
    chosen = _by_fields(by, groups)
    out = [_recommendation(kind, config, source, by_label, memory_limit)
           for (kind, _), rs in groups.items()
           for (config, source), by_label in _configurations(rs, chosen).items()]
    kind_order = {k: i for i, k in enumerate(KINDS)}
    out.sort(key=lambda rec: (kind_order.get(rec.kind, len(KINDS)), rec.predicted, rec.source,
                              tuple(_sortable(v) for _, v in rec.configuration)))
    return out


# ----- the table -----------------------------------------------------------------------------------------------
def _timing(o: Option) -> str:
    spread = f" [{o.p20_ms:.2f}-{o.p80_ms:.2f}]" if o.p20_ms is not None and o.p80_ms is not None else ""
    return f"{o.median_ms:.2f}{spread}"


VERDICT_STYLE = {BETTER: "green", SAME: "white", INCONCLUSIVE: "yellow"}
RECOMMEND_CAPTION = ("ms: median [p20-p80]. margin: runner-up time / winner time - 1. verdict, the winner against "
                     f"the runner-up: {RULE}. Only ok runs count; predicted ones only among themselves.")


def recommendation_table(recs: Sequence[Recommendation], title: str = "recommendation") -> Table:
    """The recommendations as one table per call: configuration columns (those of the first recommendation's
    kind and source; pass one group at a time, see :func:`recommendation_tables`), winner, time, runner-up,
    margin, verdict with its reason, the winner's peak memory and, with a memory limit, the fastest that fits."""
    recs = list(recs)
    fields = list(dict.fromkeys(name for rec in recs for name, _ in rec.configuration))
    limit = next((rec.memory_limit for rec in recs if rec.memory_limit is not None), None)
    predicted = any(rec.predicted for rec in recs)
    if predicted:
        title += " · PREDICTED (a model's figures, not measured)"
    table = Table(title=title, caption=escape(RECOMMEND_CAPTION), header_style="bold")
    for name in fields:
        table.add_column(name, justify="right" if name in ("seqlen", "batch", "world_size") else "left",
                         no_wrap=True)
    table.add_column("fastest", no_wrap=True)
    table.add_column("its ms", justify="right", no_wrap=True)
    table.add_column("runner-up", no_wrap=True)
    table.add_column("runner-up ms", justify="right", no_wrap=True)
    table.add_column("margin", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("why")
    table.add_column("peak mem", justify="right", no_wrap=True)
    if limit is not None:
        table.add_column(f"fastest within {size(limit)}", no_wrap=True)
    if predicted:
        table.add_column("source")
    for rec in recs:
        config = dict(rec.configuration)
        cells = [escape(config.get(name, "")) for name in fields]
        cells += [f"[bold]{escape(rec.winner.label)}[/]", _timing(rec.winner)]
        if rec.runner_up is not None and rec.verdict is not None:
            style = VERDICT_STYLE.get(rec.verdict.verdict, "white")
            cells += [escape(rec.runner_up.label), _timing(rec.runner_up),
                      "" if rec.margin is None else f"{rec.margin:+.1%}", f"[{style}]{rec.verdict.verdict}[/]",
                      escape(rec.verdict.reason)]
        else:
            cells += ["", "", "", "only option", ""]
        cells.append(size(rec.memory))
        if limit is not None:
            cells.append(escape(rec.fits.label) if rec.fits is not None else "[red]none fits[/]")
        if predicted:
            cells.append(escape(rec.source))
        table.add_row(*cells)
    return table


def recommendation_tables(recs: Sequence[Recommendation], title: str = "recommendation") -> list[Table]:
    """One :func:`recommendation_table` per (kind, source): measured and predicted never share a table."""
    groups: dict[tuple[str, str], list[Recommendation]] = {}
    for rec in recs:
        groups.setdefault((rec.kind, rec.source), []).append(rec)
    return [recommendation_table(rs, f"{title} · {kind}" + ("" if source == "measured" else f" · {source}"))
            for (kind, source), rs in groups.items()]


MEMORY_UNITS = {"b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
                "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_memory(text: str) -> int:
    """``--memory-limit`` in bytes: a size with its unit (``16GiB``, ``512MiB``, ``2.5GB``, ``1073741824B``)
    or a bare number of GiB (``16``), as ``--memory-budget``. Raises UserError for anything else."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    unit = match.group(2) if match else None
    if match is None or (unit and unit not in MEMORY_UNITS) or not float(match.group(1)) > 0:
        raise UserError(f"--memory-limit {text!r}: expected a size like 16GiB, 512MiB, 2.5GB, or a number of GiB")
    return int(float(match.group(1)) * (MEMORY_UNITS[unit] if unit else 2**30))
