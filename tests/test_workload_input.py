"""Workload input is checked before anything runs: every malformed workload suite is one UserError line that
names the key path, the bad value and what is allowed — never a run stored as ``error`` — and every shipped
suite and profile still loads.

The first half is a table of malformed suites (parse_suite on dicts); the second is parametrised over the
catalog: every built-in workload declares each parameter, its flavors and defaults satisfy the declarations,
and a value outside each declaration is refused by the loader with the key and the value named."""

from __future__ import annotations

import math

import pytest

from harness import catalog
from harness.errors import UserError
from harness.interfaces.params import Param
from suites.loader import MAX_RUNS, available_suites, load_suite, parse_suite, suite_profiles

BASE = {"name": "w", "seqlens": [256]}


def _suite(entry: dict | str, **keys) -> dict:
    return {**BASE, "workloads": [entry], **keys}


HYBRID, QTTT, DILUTION, REACH, LAYER = "hybrid_lm", "qttt", "score_dilution", "power_reach", "attention_layer"

# (suite, fragments the one line must contain: the key path, the value, what is allowed)
MALFORMED = [
    # hybrid_lm: the pattern's alphabet, depth, GQA, RoPE, names resolved in the catalog, the check length
    (_suite({"name": HYBRID, "pattern": "LLXS"}), ["workloads[0].pattern='LLXS'", "'L', 'S'"]),
    (_suite({"name": HYBRID, "pattern": ""}), ["workloads[0].pattern=''", "non-empty"]),
    (_suite({"name": HYBRID, "layers": 0}), ["workloads[0].layers=0", ">= 1"]),
    (_suite({"name": HYBRID, "heads_kv": 16}), ["workloads[0].heads_kv=16", "divisor of heads=8"]),
    (_suite({"name": HYBRID, "heads": 6, "heads_kv": 4}), ["workloads[0].heads_kv=4", "divisor of heads=6"]),
    (_suite({"name": HYBRID, "softmax_method": "sdpaa"}), ["workloads[0].softmax_method='sdpaa'", "did you mean 'sdpa'"]),
    (_suite({"name": HYBRID, "linear_method": "sdpa"}), ["workloads[0].linear_method='sdpa'", "linear_kernel"]),
    (_suite({"name": HYBRID, "linear_method": "lightnin"}), ["workloads[0].linear_method='lightnin'", "'lightning'"]),
    (_suite({"name": HYBRID, "softmax_strategy": "ring_zigzagg"}),
     ["workloads[0].softmax_strategy='ring_zigzagg'", "'ring_zigzag'"]),
    (_suite({"name": HYBRID, "rope_dim": 33}), ["workloads[0].rope_dim=33", "even", "head_dim=64"]),
    (_suite({"name": HYBRID, "rope_dim": 128}), ["workloads[0].rope_dim=128", "head_dim=64"]),
    (_suite({"name": HYBRID, "check_tokens": 0}), ["workloads[0].check_tokens=0", ">= 2"]),
    (_suite({"name": HYBRID, "residual": "post_norm"}), ["workloads[0].residual='post_norm'", "'minimax'"]),
    (_suite({"name": HYBRID, "eps": 0.0}), ["workloads[0].eps=0.0", "> 0"]),
    (_suite({"name": HYBRID, "rope_base": -1.0}), ["workloads[0].rope_base=-1.0", "> 0"]),
    (_suite({"name": HYBRID, "vocab": 1}), ["workloads[0].vocab=1", ">= 2"]),
    (_suite({"name": HYBRID, "layers": [8, 0]}), ["workloads[0].layers=0", ">= 1"]),  # one bad sweep point
    # qttt: the span's placement, the optimiser's numbers, GQA and RoPE
    (_suite({"name": QTTT, "span_at": "middle"}), ["workloads[0].span_at='middle'", "'random', 'end'"]),
    (_suite({"name": QTTT, "clip": -1.0}), ["workloads[0].clip=-1.0", "> 0"]),
    (_suite({"name": QTTT, "steps": 0}), ["workloads[0].steps=0", ">= 1"]),
    (_suite({"name": QTTT, "span": 0}), ["workloads[0].span=0", ">= 1"]),
    (_suite({"name": QTTT, "lr": 0.0}), ["workloads[0].lr=0.0", "> 0"]),
    (_suite({"name": QTTT, "weight_decay": -0.1}), ["workloads[0].weight_decay=-0.1", ">= 0"]),
    (_suite({"name": QTTT, "answer_tokens": 0}), ["workloads[0].answer_tokens=0", ">= 1"]),
    (_suite({"name": QTTT, "head_dim": 33}), ["workloads[0].head_dim=33", "even"]),
    (_suite({"name": QTTT, "heads_kv": 3}), ["workloads[0].heads_kv=3", "divisor of heads_q=4"]),
    (_suite({"name": QTTT, "method": "sdpaa"}), ["workloads[0].method='sdpaa'", "'sdpa'"]),
    # score_dilution: a mass is a fraction, noise a deviation, a finite margin
    (_suite({"name": DILUTION, "target_mass": 1.5}), ["workloads[0].target_mass=1.5", "> 0 and < 1"]),
    (_suite({"name": DILUTION, "target_mass": 0.0}), ["workloads[0].target_mass=0.0", "> 0 and < 1"]),
    (_suite({"name": DILUTION, "noise": -1.0}), ["workloads[0].noise=-1.0", ">= 0"]),
    (_suite({"name": DILUTION, "max_steps": -1}), ["workloads[0].max_steps=-1", ">= 0"]),
    (_suite({"name": DILUTION, "margin": math.nan}), ["workloads[0].margin=nan", "finite"]),
    # power_reach: blocks and heads
    (_suite({"name": REACH, "block": 0}), ["workloads[0].block=0", ">= 1"]),
    (_suite({"name": REACH, "layers": -1}), ["workloads[0].layers=-1", ">= 0"]),
    (_suite({"name": REACH, "heads": 0}), ["workloads[0].heads=0", ">= 1"]),
    (_suite({"name": REACH, "tokens_per_block": -4}), ["workloads[0].tokens_per_block=-4", ">= 0"]),
    # attention_layer
    (_suite({"name": LAYER, "heads_q": 6, "heads_kv": 4}), ["workloads[0].heads_kv=4", "divisor of heads_q=6"]),
    (_suite({"name": LAYER, "head_dim": 0}), ["workloads[0].head_dim=0", ">= 1"]),
    (_suite({"name": LAYER, "method": "flexx"}), ["workloads[0].method", "'flexx'", "'flex'"]),
    (_suite({"name": LAYER, "lr": math.inf}), ["workloads[0].lr=inf", "finite"]),
    (_suite({"name": LAYER, "seed": -1}), ["workloads[0].seed=-1", ">= 0"]),
    # a profile's value is named by its path in the profile
    ({**_suite(LAYER), "profiles": {"cpu": {"workloads": [{"name": HYBRID, "layers": 0}]}}},
     ["profiles.cpu.workloads[0].layers=0", ">= 1"]),
    # keys the workloads would ignore, or that do not fit the sweep
    (_suite(LAYER, options={"block_q": 64}), ["options.block_q", "unknown option", "(none)"]),
    (_suite(QTTT, options={"bogus": 1}), ["options.bogus", "unknown option"]),
    (_suite(LAYER, directions=["fwd"]), ["directions=['fwd']", "no 'methods' or 'strategies'", "'phases'"]),
    (_suite(LAYER, decode_tokens=512), ["decode_tokens=512", "at most", "256"]),
    (_suite({"name": LAYER, "seed": list(range(MAX_RUNS + 1))}), ["workloads[0]", str(MAX_RUNS + 1), str(MAX_RUNS)]),
    (_suite(LAYER, seqlens=[1 << 60]), [f"seqlens[0]={1 << 60}", "GiB"]),
]


@pytest.mark.parametrize("suite,fragments", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_a_malformed_workload_suite_is_one_line_naming_the_key_and_value(suite, fragments):
    with pytest.raises(UserError) as e:
        parse_suite(suite, profile="cpu" if "profiles" in suite else None)
    message = str(e.value)
    assert "\n" not in message and message.startswith("suite: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_there_are_at_least_thirty_malformed_cases():
    assert len(MALFORMED) >= 30


def test_workload_options_are_those_of_the_methods_they_run():
    suite = parse_suite(_suite({"name": DILUTION, "method": "lightning"}, options={"block": [32, 64]},
                               phases=["mass"]))
    assert sorted(r.option_kwargs["block"] for r in suite.runs) == [32, 64]


@pytest.mark.parametrize("name,profile", [(n, p) for n in available_suites() for p in [None, *suite_profiles(n)]])
def test_every_shipped_suite_and_profile_loads(name, profile):
    assert load_suite(name, profile).runs


# ----- over the catalog ------------------------------------------------------------------------------------

WORKLOADS = sorted(catalog.workloads().values(), key=lambda w: w.name)
BUILTIN = [w for w in WORKLOADS if w.specs]


@pytest.mark.parametrize("workload", BUILTIN, ids=lambda w: w.name)
def test_every_parameter_is_declared(workload):
    undeclared = set(workload.params) - set(workload.specs) - {"flavor"}
    assert not undeclared, f"{workload.name}: parameters without a Param spec: {sorted(undeclared)}"


@pytest.mark.parametrize("workload", BUILTIN, ids=lambda w: w.name)
def test_defaults_and_every_flavor_satisfy_the_declarations(workload):
    workload.resolve_params({}, catalog.lookup)
    for flavor in workload.flavors:
        workload.resolve_params({"flavor": flavor}, catalog.lookup)


def _outside(spec: Param):
    """A value of the right type the declaration does not allow (None when every such value is allowed)."""
    for bound, step in ((spec.ge, -1), (spec.gt, 0), (spec.le, 1), (spec.lt, 0)):
        if bound is not None:
            value = bound + step
            return int(value) if spec.kind is int else float(value)
    if spec.choices:
        return "no-such-choice"
    if spec.alphabet:
        return "?" + spec.alphabet
    if spec.registry:
        return "no-such-name"
    return math.nan if spec.kind is float else None


CASES = [(w, key, spec) for w in BUILTIN for key, spec in w.specs.items()]


@pytest.mark.parametrize("workload,key,spec", CASES, ids=[f"{w.name}.{k}" for w, k, _ in CASES])
def test_a_value_outside_each_declaration_is_refused_by_the_loader(workload, key, spec):
    bad = _outside(spec)
    wrong_type = {"not": "a value"}
    for value in ([bad] if bad is not None else []) + [wrong_type]:
        with pytest.raises(UserError) as e:
            parse_suite(_suite({"name": workload.name, key: value}, phases=[workload.phases[0]]))
        message = str(e.value)
        assert "\n" not in message and f"workloads[0]" in message and key in message, message
        assert repr(value) in message or (isinstance(value, dict) and "dict" in message), message
