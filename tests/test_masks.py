"""Property tests of the mask library, parametrised over the registry: a new pattern is tested for free.

For every pattern and drawn parameters/lengths, the interval form (what kernels, areas and shard plans use)
must equal the pattern's definition evaluated brute force, and every derived quantity (area, block counts,
block map, varlen description, shard areas) must agree with the dense reference.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from harness.errors import UserError
from harness.masks import ARBITRARY, MASKS, PER_HEAD, Mask, Varlen, build_mask
from harness.masks.core import EMPTY, FULL, PARTIAL
from harness.masks.documents import BUILTIN_DISTRIBUTIONS
from harness.masks.sharding import LAYOUTS, shard_areas, shard_positions
from harness.masks.view import describe_mask, mask_command, save_mask_png

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_S = 160

ints = st.integers
docs = {
    "distribution": st.sampled_from(BUILTIN_DISTRIBUTIONS),
    "seed": ints(0, 10**6),
    "max_doc_fraction": st.sampled_from([0.1, 0.25, 0.5, 1.0]),
}
blocky = {"block": ints(1, 16), "window_blocks": ints(1, 6), "sink_blocks": ints(0, 3)}


def fixed(**strategies):
    """A params strategy independent of the sequence length."""
    return lambda draw, s: (draw(st.fixed_dictionaries(strategies)), 1)


def _block_causal_document(draw, s):
    block = draw(st.sampled_from([b for b in range(1, s + 1) if s % b == 0]))
    return {"block": block, "max_doc_blocks": draw(ints(1, 8)), "seed": draw(ints(0, 10**6))}, 1


def _long(draw, s):
    long_min = draw(ints(1, 40))
    params = draw(st.fixed_dictionaries(docs))
    params.update(
        long_fraction=draw(st.floats(0, 1)), long_min=long_min, long_max=long_min + draw(ints(0, 60)),
        reference_seqlen=draw(ints(1, 4 * s)),
    )
    return params, 1


def _longnet(draw, s):
    pairs = draw(st.lists(st.tuples(ints(1, 8), ints(1, 4)), min_size=1, max_size=4))
    return {"block": draw(ints(1, 8)), "segments": [w for w, _ in pairs], "dilations": [r for _, r in pairs]}, 1


def _neighborhood(draw, s):
    dilation = draw(ints(1, min(4, s)))
    window = draw(ints(1, s // dilation))
    params = {"window": window, "dilation": dilation, "stride": draw(ints(1, window)), "causal": draw(st.booleans())}
    return params, 1


def _s2(draw, s):
    heads = draw(ints(1, 4))
    params = {
        "block": draw(ints(1, 16)), "local_blocks": draw(ints(1, 4)), "vert_stride": draw(ints(1, 6)),
        "dense_heads": draw(ints(0, heads)),
    }
    return params, heads


def _prefix(draw, s):
    return draw(st.one_of(st.none(), ints(0, s)))


# name -> (draw, seqlen) -> (params, num_heads). Patterns missing here are tested with their registered
# small-length examples.
STRATEGIES = {
    "full": fixed(),
    "causal": fixed(),
    "sliding_window": lambda draw, s: ({"left": draw(ints(0, s + 2)), "right": draw(ints(0, s + 2))}, 1),
    "sliding_window_causal": lambda draw, s: ({"window": draw(ints(0, s + 2))}, 1),
    "prefix_lm_causal": lambda draw, s: ({"prefix": _prefix(draw, s)}, 1),
    "full_document": fixed(**docs),
    "causal_document": fixed(**docs),
    "share_question": fixed(**docs),
    "causal_blockwise": fixed(**docs),
    "prefix_lm_document": lambda draw, s: ({**draw(st.fixed_dictionaries(docs)), "prefix": _prefix(draw, s)}, 1),
    "block_causal_document": _block_causal_document,
    "full_document_long": _long,
    "causal_document_long": _long,
    "power": fixed(**blocky),
    "sliding_window_sink": fixed(**blocky),
    "stride_slash": fixed(**blocky, stride=ints(1, 8)),
    "dilated": fixed(block=ints(1, 16), dilation=ints(1, 4), span_blocks=ints(1, 12)),
    "longnet": _longnet,
    "neighborhood": _neighborhood,
    "s2": _s2,
    "streaming": lambda draw, s: ({"n_sink": draw(ints(0, s + 2)), "window": draw(ints(0, s + 2))}, 1),
    "global_sliding_window": lambda draw, s: (
        {"global_tokens": draw(ints(0, s)), "left": draw(ints(0, s + 2)), "right": draw(ints(0, s + 2))}, 1
    ),
}


@st.composite
def cases(draw, name: str) -> tuple[int, int, dict]:
    if name not in STRATEGIES:
        return draw(ints(64, 512)), 1, dict(draw(st.sampled_from(MASKS[name].examples)))
    seqlen = draw(ints(1, MAX_S))
    params, heads = STRATEGIES[name](draw, seqlen)
    return seqlen, heads, params


def build(name: str, seqlen: int, heads: int, params: dict) -> Mask:
    try:
        return build_mask(name, seqlen, heads, **params)
    except UserError:
        if name in STRATEGIES:
            raise  # drawn parameters are valid by construction
        reject()  # the example needs a longer sequence


def varlen_dense(varlen: Varlen, seqlen: int) -> torch.Tensor:
    """Dense mask of a varlen description, written independently of the patterns."""
    out = torch.zeros(seqlen, seqlen, dtype=torch.bool)
    left, right = varlen.window
    cu = varlen.cu_seqlens.tolist()
    for a, b in zip(cu[:-1], cu[1:]):
        q = torch.arange(a, b).view(-1, 1)
        k = torch.arange(a, b).view(1, -1)
        ok = torch.ones(b - a, b - a, dtype=torch.bool)
        if varlen.causal:
            ok &= k <= q
        if left >= 0:
            ok &= q - k <= left
        if right >= 0:
            ok &= k - q <= right
        out[a:b, a:b] = ok
    return out[None]


def assert_disjoint_and_merged(mask: Mask) -> None:
    """Intervals of a row never overlap, and touching step-1 intervals are merged."""
    iv = mask.intervals
    nonempty = iv.hi > iv.lo
    big = torch.iinfo(torch.int64).max
    lo = iv.lo.masked_fill(~nonempty, big)
    lo, order = lo.sort(-1)
    hi, step = iv.hi.gather(-1, order), iv.step.gather(-1, order)
    last = lo + torch.div(hi - lo - 1, step, rounding_mode="floor") * step  # last key of each interval
    both = (lo[..., 1:] != big) & (lo[..., :-1] != big)
    assert bool((last[..., :-1] < lo[..., 1:])[both].all()), "overlapping intervals in a row"
    plain = both & (step[..., 1:] == 1) & (step[..., :-1] == 1)
    assert bool((hi[..., :-1] < lo[..., 1:])[plain].all()), "adjacent intervals not merged"


def expected_block_counts(ref: torch.Tensor, bq: int, bk: int) -> torch.Tensor:
    hm, s, _ = ref.shape
    nq, nk = math.ceil(s / bq), math.ceil(s / bk)
    padded = torch.nn.functional.pad(ref.long(), (0, nk * bk - s, 0, nq * bq - s))
    return padded.view(hm, nq, bq, nk, bk).sum((2, 4))


@pytest.mark.parametrize("name", sorted(MASKS))
@SETTINGS
@given(data=st.data())
def test_intervals_match_definition(name: str, data) -> None:
    seqlen, heads, params = data.draw(cases(name))
    mask = build(name, seqlen, heads, params)
    ref = mask.dense_from_definition()
    assert ref.dtype == torch.bool and ref.shape == (mask.intervals.num_heads, seqlen, seqlen)
    assert torch.equal(mask.dense(), ref)
    assert_disjoint_and_merged(mask)
    # exact areas
    assert torch.equal(mask.intervals.counts(), ref.sum(-1))
    assert torch.equal(mask.head_areas(), ref.sum((1, 2)))
    assert mask.area(mask.intervals.num_heads if mask.per_head else 1) == int(ref.sum())
    # block counts and classes at random block sizes
    bq, bk = data.draw(ints(1, seqlen + 3)), data.draw(ints(1, seqlen + 3))
    counts = expected_block_counts(ref, bq, bk)
    assert torch.equal(mask.block_counts(bq, bk), counts)
    cap = expected_block_counts(torch.ones_like(ref[:1]), bq, bk)
    classes = torch.where(counts == 0, EMPTY, torch.where(counts == cap, FULL, PARTIAL))
    assert torch.equal(mask.block_map(bq, bk).long(), classes.long())
    # varlen description and features
    if mask.varlen is not None:
        assert not mask.per_head
        assert torch.equal(varlen_dense(mask.varlen, seqlen), ref)
        assert ARBITRARY not in mask.features
    else:
        assert ARBITRARY in mask.features
    assert (PER_HEAD in mask.features) == mask.per_head
    if mask.doc_lengths is not None:
        assert sum(mask.doc_lengths) == seqlen and min(mask.doc_lengths) >= 1


@pytest.mark.parametrize("name", sorted(MASKS))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_sharding_and_determinism(name: str, data) -> None:
    seqlen, heads, params = data.draw(cases(name))
    mask = build(name, seqlen, heads, params)
    again = build_mask(name, seqlen, heads, **params)
    for a, b in [(mask.intervals.lo, again.intervals.lo), (mask.intervals.hi, again.intervals.hi)]:
        assert torch.equal(a, b)
    assert mask.doc_lengths == again.doc_lengths
    world = data.draw(ints(1, 4))
    total = int(mask.head_areas().sum())
    for layout in sorted(LAYOUTS):
        multiple = 2 * world if layout == "zigzag" else world
        if seqlen % multiple:
            with pytest.raises(UserError, match="seqlen"):
                shard_positions(mask, layout, world)
            continue
        positions = shard_positions(mask, layout, world)
        assert len(positions) == world
        assert {len(p) for p in positions} == {seqlen // world}
        assert torch.equal(torch.cat(positions).sort().values, torch.arange(seqlen))
        shards = shard_areas(mask, layout, world)
        assert sum(shards.areas) == total
        assert shards.imbalance >= 1.0 - 1e-12


# ----- explicit examples --------------------------------------------------------------------------------------


def test_power_matches_paper_example() -> None:
    # 32K at block 256 = 128 blocks: 5 window + 1 sink + 4 power blocks (8, 16, 32, 64) for the last block
    mask = build_mask("power", 128, block=1, window_blocks=5, sink_blocks=1)
    assert mask.dense()[0, 127].nonzero().flatten().tolist() == [0, 63, 95, 111, 119, 123, 124, 125, 126, 127]


def test_neighborhood_special_cases() -> None:
    s, w = 40, 7
    sliding = build_mask("neighborhood", s, window=w, stride=1)
    q, k = torch.arange(s).view(-1, 1), torch.arange(s).view(1, -1)
    assert bool((sliding.intervals.counts() == w).all())  # non-causal: always exactly `window` keys
    blocked = build_mask("neighborhood", 35, window=7, stride=7)  # HaloNet-style: blocks of 7 attend within
    qb, kb = torch.arange(35).view(-1, 1) // 7, torch.arange(35).view(1, -1) // 7
    assert torch.equal(blocked.dense()[0], qb == kb)
    causal = build_mask("neighborhood", s, window=w, causal=True)
    assert torch.equal(causal.dense()[0], (k <= q) & (q - k < w))
    assert causal.varlen is not None and causal.varlen.window == (w - 1, 0)
    dil = build_mask("neighborhood", s, window=3, dilation=4)
    assert bool((dil.intervals.step == 4).all())
    assert torch.equal(dil.dense()[0] & ((q - k) % 4 != 0), torch.zeros(s, s, dtype=torch.bool))


def test_s2_heads_cover_the_context() -> None:
    mask = build_mask("s2", 256, 4, block=8, local_blocks=2, vert_stride=4)
    dense = mask.dense()
    causal = torch.ones(256, 256, dtype=torch.bool).tril()
    assert torch.equal(dense.any(0), causal)  # the union over heads is the whole causal context
    assert not torch.equal(dense[0], dense[1])  # heads read different shards
    assert mask.area(4) == int(dense.sum())
    with pytest.raises(ValueError):
        mask.area(2)


def test_document_long_scales_below_reference() -> None:
    mask = build_mask("causal_document_long", 2048)
    assert len(mask.doc_lengths) >= 4
    long_share = sum(n for n in mask.doc_lengths if n >= 8192 * 2048 // 131072)
    assert long_share >= 0.5 * 2048


def test_zigzag_layouts() -> None:
    mask = build_mask("causal", 8)
    zz = shard_positions(mask, "zigzag", 2)
    assert [p.tolist() for p in zz] == [[0, 1, 6, 7], [2, 3, 4, 5]]
    assert [p.tolist() for p in shard_positions(mask, "striped", 2)] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert [p.tolist() for p in shard_positions(mask, "doc_zigzag", 2)] == [p.tolist() for p in zz]
    big = build_mask("causal", 4096)
    assert shard_areas(big, "zigzag", 4).imbalance < 1.01 < shard_areas(big, "contiguous", 4).imbalance
    docs = build_mask("causal_document", 4096)
    per_doc = shard_areas(docs, "doc_zigzag", 4)
    assert per_doc.imbalance < shard_areas(docs, "contiguous", 4).imbalance
    with pytest.raises(UserError, match=r"zigzag: seqlen=12 .*2 \* world_size \(8\)"):
        shard_positions(build_mask("causal", 12), "zigzag", 4)
    with pytest.raises(UserError, match="unknown sharding layout"):
        shard_positions(mask, "zagzig", 2)


# ----- bad input ---------------------------------------------------------------------------------------------

BAD = [
    ("sliding_window", {"left": -1}, "left"),
    ("sliding_window_causal", {"window": -5}, "window"),
    ("prefix_lm_causal", {"prefix": 65}, "prefix"),
    ("prefix_lm_causal", {"prefix": -1}, "prefix"),
    ("prefix_lm_document", {"prefix": 100}, "prefix"),
    ("full_document", {"max_doc_fraction": 0.0}, "max_doc_fraction"),
    ("share_question", {"max_doc_fraction": 2.0}, "max_doc_fraction"),
    ("block_causal_document", {"block": 7}, "block"),
    ("block_causal_document", {"block": 0}, "block"),
    ("block_causal_document", {"block": 16, "max_doc_blocks": 0}, "max_doc_blocks"),
    ("full_document_long", {"long_fraction": 1.5}, "long_fraction"),
    ("causal_document_long", {"long_min": 10, "long_max": 5}, "long_max"),
    ("power", {"block": 0}, "block"),
    ("power", {"window_blocks": 0}, "window_blocks"),
    ("sliding_window_sink", {"sink_blocks": -1}, "sink_blocks"),
    ("stride_slash", {"stride": 0}, "stride"),
    ("dilated", {"dilation": 0}, "dilation"),
    ("dilated", {"span_blocks": 0}, "span_blocks"),
    ("longnet", {"segments": [8, 16], "dilations": [1]}, "dilations"),
    ("longnet", {"segments": [0], "dilations": [1]}, "segments"),
    ("neighborhood", {"window": 0}, "window"),
    ("neighborhood", {"window": 40, "dilation": 2}, "window"),
    ("neighborhood", {"window": 8, "stride": 9}, "stride"),
    ("neighborhood", {"window": 8, "dilation": 0}, "dilation"),
    ("s2", {"dense_heads": 5}, "dense_heads"),
    ("s2", {"vert_stride": 0}, "vert_stride"),
    ("s2", {"local_blocks": 0}, "local_blocks"),
    ("streaming", {"window": -1}, "window"),
    ("streaming", {"n_sink": -1}, "n_sink"),
    ("global_sliding_window", {"global_tokens": 65}, "global_tokens"),
    ("global_sliding_window", {"right": -2}, "right"),
]


@pytest.mark.parametrize("name,params,param", BAD, ids=[f"{n}-{p}" for n, _, p in BAD])
def test_bad_parameters_are_one_line_user_errors(name: str, params: dict, param: str) -> None:
    with pytest.raises(UserError) as err:
        build_mask(name, 64, 4 if name == "s2" else 1, **params)
    message = str(err.value)
    assert "\n" not in message and name in message
    assert f"{param}={params[param]!r}" in message


@pytest.mark.parametrize("name", sorted(MASKS))
def test_unknown_and_mistyped_parameters(name: str) -> None:
    with pytest.raises(UserError, match="unknown parameter"):
        build_mask(name, 64, bogus=1)
    typed = [k for k, v in MASKS[name].defaults.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for key in typed[:1]:
        with pytest.raises(UserError, match=key):
            build_mask(name, 64, **{key: "many"})


@pytest.mark.parametrize("name", sorted(MASKS))
def test_examples_build_at_small_lengths(name: str) -> None:
    """Registered examples are what the gates run (480 here, 1024 in ``lcbench validate``), with 4 heads."""
    for params in MASKS[name].examples:
        for seqlen in (480, 1024):
            assert build_mask(name, seqlen, 4, **params).seqlen == seqlen


def test_unknown_pattern() -> None:
    with pytest.raises(UserError, match="unknown mask 'casual'.*did you mean 'causal'"):
        build_mask("casual", 64)


# ----- user distributions ------------------------------------------------------------------------------------


def test_user_distribution_files(tmp_path) -> None:
    as_json = tmp_path / "lengths.json"
    as_json.write_text(json.dumps({"[10,20)": 0.5, "[100,200)": 0.5}))
    as_csv = tmp_path / "lengths.csv"
    as_csv.write_text("range,count\n[10,20),5\n[100,200),5\n")
    for path in (as_json, as_csv):
        mask = build_mask("causal_document", 2000, distribution=str(path), max_doc_fraction=1.0)
        assert sum(mask.doc_lengths) == 2000 and len(mask.doc_lengths) > 5
        assert max(mask.doc_lengths) < 200
        assert mask.describe()["documents"]["count"] == len(mask.doc_lengths)


@pytest.mark.parametrize("content,suffix,match", [
    ("", ".json", "empty"),
    ("   \n", ".csv", "empty"),
    ("{}", ".json", "empty"),
    ("range,count\n", ".csv", "empty"),
    ("[0,10),lots\n", ".csv", "not 'range,count'"),
    ("{\"[5,2)\": 1}", ".json", "lo < hi"),
])
def test_bad_distribution_files(tmp_path, content: str, suffix: str, match: str) -> None:
    path = tmp_path / f"dist{suffix}"
    path.write_text(content)
    with pytest.raises(UserError, match=match) as err:
        build_mask("full_document", 256, distribution=str(path))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="neither a built-in"):
        build_mask("full_document", 256, distribution=str(tmp_path / "missing.json"))


# ----- view ---------------------------------------------------------------------------------------------------


def test_describe_and_pictures(tmp_path, capsys) -> None:
    mask = build_mask("s2", 300, 3, block=16, dense_heads=1)
    info = describe_mask(mask, block=32)
    b = info["blocks"]
    assert b["empty"] + b["partial"] + b["full"] == 3 * 10 * 10
    assert info["area"] == mask.area(3)
    small = tmp_path / "s2.png"
    save_mask_png(mask, str(small))
    big = tmp_path / "docs.png"
    save_mask_png(build_mask("causal_document", 3000), str(big), max_pixels=256)  # downsampled
    assert small.stat().st_size > 1000 and big.stat().st_size > 1000
    mask_command("power", 512, {"block": "32"}, str(tmp_path / "p.png"), 1, 64)
    out = capsys.readouterr().out
    assert "power" in out and "density" in out and (tmp_path / "p.png").exists()
    with pytest.raises(UserError, match="block='x'"):
        mask_command("power", 512, {"block": "x"}, None, 1, 64)


@pytest.mark.parametrize("name", ["causal", "full", "causal_document", "s2"])
def test_a_padded_mask_adds_tokens_that_attend_nothing(name):
    """Both forms of a padded mask agree; the real tokens' rows are unchanged and the padding neither attends nor
    is attended; the area and the features are the real mask's."""
    mask = build_mask(name, 250, 4)
    padded = mask.padded(256)
    dense = padded.dense()
    assert torch.equal(dense, padded.dense_from_definition(dense.shape[0]))
    assert torch.equal(dense[:, :250, :250], mask.dense()) and not dense[:, 250:].any() and not dense[:, :, 250:].any()
    assert padded.area(4) == mask.area(4) and padded.features == mask.features and padded.padding == 6
