"""``score_dilution``: the qTTT paper's score-dilution argument, measured (arXiv 2512.13898; REFERENCE.md section 5).

A retrieval problem built in code, no training data: one query ``q = W_Q x`` (``W_Q`` the identity, ``x`` a unit
vector ``u``) against ``T`` keys — one target at a seeded position with logit ``Delta`` (param ``margin``) and
``T - 1`` distractors orthogonal to ``u`` (logit 0, plus ``noise`` x N(0, 1) when ``noise > 0``); the target's
value is ``e_0``, the distractors' are 0, so the attention output's first coordinate is the attention mass on the
target. The attention runs through a registered method (param ``method``) as a decode step: one query row (the
last position) against the whole cache.

Phases:
- ``mass``: the timed call is that attention step. Metrics: ``mass`` (measured), ``mass_analytic``
  (``1 / (1 + (T-1) e^(-Delta) E[e^noise])``, ``E[e^noise] = e^(noise^2 / 2)``), ``mass_rel_error``.
- ``restore``: W_Q is trained (Adam, ``lr``) on ``-log(mass)`` until the mass reaches ``target_mass``; the
  timed call is the whole loop from the identity. Metrics: ``steps`` (to restore; ``max_steps`` if never),
  ``restored`` (1/0), ``margin_needed`` (the uniform margin giving ``target_mass`` at T:
  ``log((T-1) m / (1-m))`` — it grows like log T), ``margin_reached`` (the target logit minus the log-mean-exp
  of the distractors' logits after training), ``mass_after``.

The check compares the method's output with float64 exact attention (the field's rule; 2x the eager error).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from harness.interfaces import CheckResult, Metric, Problem, Unsupported, Workload, WorkloadProblem, WorkloadStep, \
    check_against_eager
from harness.interfaces.params import integer, number, registered, seed
from harness.masks import build_mask
from harness.run import DECODE
from workloads.models.attention_block import eager_attend, reference_attend

MASS, RESTORE = "mass", "restore"


@dataclass
class Retrieval:
    """The built retrieval problem: x, the keys and values ``[1, T, 1, d]``, the target's position."""

    x: torch.Tensor  # [d]
    k: torch.Tensor
    v: torch.Tensor
    target: int
    attn: Problem


SPECS = {
    "head_dim": integer(ge=1),
    "margin": number(doc="the target's logit"), "noise": number(ge=0, doc="std of the distractors' logits"),
    "method": registered("method"), "target_mass": number(gt=0, lt=1), "lr": number(gt=0),
    "max_steps": integer(ge=0), "seed": seed(),
}


def attention_problem(problem: WorkloadProblem) -> Problem:
    run, d = problem.run, problem.params["head_dim"]
    return Problem(mask=build_mask(run.mask, run.seqlen, 1, **run.mask_kwargs), batch=1, seqlen=run.seqlen,
                   heads_q=1, heads_kv=1, head_dim=d, dtype=problem.dtype, device=problem.device,
                   options=run.option_kwargs, direction=DECODE, decode_tokens=1)


def retrieval(problem: WorkloadProblem) -> Retrieval:
    p, T = problem.params, problem.run.seqlen
    d = p["head_dim"]
    g = torch.Generator().manual_seed(p["seed"])
    u = torch.zeros(d, dtype=torch.float64)
    u[0] = 1.0
    keys = torch.randn(T, d, generator=g, dtype=torch.float64)
    keys[:, 0] = p["noise"] * math.sqrt(d) * torch.randn(T, generator=g, dtype=torch.float64)  # logit noise
    target = int(torch.randint(0, T, (1,), generator=g))
    keys[target] = 0.0
    keys[target, 0] = p["margin"] * math.sqrt(d)  # scale * q.k = margin
    values = torch.zeros(T, d, dtype=torch.float64)
    values[target, 0] = 1.0
    cast = lambda t: t.to(dtype=problem.dtype, device=problem.device).view(1, T, 1, d)  # noqa: E731
    return Retrieval(u.to(dtype=problem.dtype, device=problem.device), cast(keys), cast(values), target,
                     attention_problem(problem))


def analytic_mass(T: int, margin: float, noise: float) -> float:
    return 1.0 / (1.0 + (T - 1) * math.exp(-margin + noise * noise / 2))


def margin_needed(T: int, mass: float) -> float:
    return math.log((T - 1) * mass / (1.0 - mass))


def limits(problem: WorkloadProblem) -> Optional[str]:
    p = problem.params
    method = problem.method(p["method"])
    why = method.unavailable_reason() or method.unsupported_reason(attention_problem(problem))
    if not why and problem.phase == RESTORE and not method.backward:
        why = "backward (forward only): restoring the mass trains W_Q"
    return f"method {method.name}: {why}" if why else None


def _mass(fn, wq: torch.Tensor, r: Retrieval) -> torch.Tensor:
    q = (wq @ r.x).view(1, 1, 1, -1)
    return fn(q, r.k, r.v)[0, 0, 0, 0]


def _check(fn, r: Retrieval, dtype: torch.dtype) -> CheckResult:
    q = r.x.view(1, 1, 1, -1)
    rows, off = torch.arange(1), r.attn.q_offset
    got = fn(q, r.k, r.v).detach()
    exact = reference_attend(r.attn.mask, r.attn.scale, rows, off)(q, r.k, r.v)
    eager = eager_attend(r.attn.mask, r.attn.scale, rows, off)(q, r.k, r.v)
    return check_against_eager({"out": got}, {"out": exact}, {"out": eager})


def build_mass(problem: WorkloadProblem) -> WorkloadStep:
    p, T = problem.params, problem.run.seqlen
    method = problem.method(p["method"])
    r = retrieval(problem)
    fn = method.build(r.attn)
    wq = torch.eye(p["head_dim"], dtype=problem.dtype, device=problem.device)
    analytic = analytic_mass(T, p["margin"], p["noise"])

    def call():
        with torch.no_grad():
            return _mass(fn, wq, r)

    def metrics(s: float) -> dict[str, float]:
        mass = float(call())
        return {"mass": mass, "mass_analytic": analytic, "mass_rel_error": abs(mass - analytic) / analytic,
                "margin_needed": margin_needed(T, p["target_mass"]), "us": s * 1e6}

    return WorkloadStep(call=call, flops=2.0 * p["head_dim"] ** 2 + method.executed(r.attn, "fwd"),
                        check=lambda: _check(fn, r, problem.dtype),
                        metrics=metrics, fields={"target_position": r.target}, inputs=(r.k, r.v))


def build_restore(problem: WorkloadProblem) -> WorkloadStep:
    p, T = problem.params, problem.run.seqlen
    method = problem.method(p["method"])
    r = retrieval(problem)
    fn = method.build(r.attn)
    d = p["head_dim"]

    def train() -> tuple[int, torch.Tensor]:
        wq = torch.eye(d, dtype=problem.dtype, device=problem.device).requires_grad_(True)
        opt = torch.optim.Adam([wq], lr=p["lr"])
        for step in range(p["max_steps"] + 1):
            mass = _mass(fn, wq, r)
            if float(mass.detach()) >= p["target_mass"] or step == p["max_steps"]:
                return step, wq.detach()
            if not mass.requires_grad:
                raise Unsupported(f"method {method.name}: its decode path has no backward (W_Q needs dQ)")
            opt.zero_grad(set_to_none=True)
            (-torch.log(mass)).backward()
            opt.step()
        raise AssertionError("unreachable")

    steps, wq = train()  # outside timing: the step count fixes the FLOPs, the weights give the metrics
    with torch.no_grad():
        q = wq @ r.x
        logits = (r.k[0, :, 0].double() @ q.double()) * r.attn.scale
        others = torch.cat([logits[:r.target], logits[r.target + 1:]])
        reached = float(logits[r.target] - (torch.logsumexp(others, 0) - math.log(T - 1)))
        mass_after = float(_mass(fn, wq, r))
    # what train() executes: steps + 1 forwards (q = W_Q x, then the one-row attention) and ``steps`` backwards
    # (the attention's dQ only: the keys and values are fixed; dW_Q = dq x^T is an outer product, element-wise)
    forward = 2.0 * d * d + method.executed(r.attn, "fwd")
    backward = method.executed(r.attn, "bwd", kv_grad=False)

    def metrics(s: float) -> dict[str, float]:
        return {"steps": float(steps), "restored": float(mass_after >= p["target_mass"]),
                "margin_needed": margin_needed(T, p["target_mass"]), "margin_reached": reached,
                "mass_after": mass_after, "mass": mass_after,
                "mass_analytic": analytic_mass(T, p["margin"], p["noise"]), "ms": s * 1e3}

    return WorkloadStep(call=train, flops=(steps + 1) * forward + steps * backward,
                        check=lambda: _check(fn, r, problem.dtype), metrics=metrics,
                        fields={"target_position": r.target}, inputs=(r.k, r.v))


def build(problem: WorkloadProblem) -> WorkloadStep:
    return {MASS: build_mass, RESTORE: build_restore}[problem.phase](problem)


WORKLOAD = Workload(
    name="score_dilution",
    summary="one target key among T-1 distractors with logit margin Delta: attention mass vs T against "
            "1/(1+(T-1)e^-Delta), and W_Q steps to restore a fixed mass",
    phases=(MASS, RESTORE),
    params={"head_dim": 64, "margin": 4.0, "noise": 0.0, "method": "sdpa", "target_mass": 0.5, "lr": 0.05,
            "max_steps": 500, "seed": 0},
    build=build,
    specs=SPECS,
    metrics=(
        Metric("mass", "fraction", "higher", "attention mass on the target (measured through the method)"),
        Metric("mass_analytic", "fraction", "higher", "1 / (1 + (T-1) e^(-Delta + noise^2/2))"),
        Metric("mass_rel_error", "fraction", "lower", "|measured - analytic| / analytic"),
        Metric("margin_needed", "logit", "lower", "uniform margin giving target_mass at T: log((T-1) m/(1-m))"),
        Metric("margin_reached", "logit", "higher", "target logit - log-mean-exp of distractor logits after training"),
        Metric("steps", "steps", "lower", "Adam steps on W_Q until the mass reaches target_mass"),
        Metric("restored", "bool", "higher", "1 when target_mass was reached within max_steps"),
        Metric("mass_after", "fraction", "higher", "mass on the target after the restoring steps"),
        Metric("us", "us", "lower", "time of one attention step"),
        Metric("ms", "ms", "lower", "time of the whole restoring loop"),
    ),
    flop_convention="mass: q = W_Q x (2*d^2) + the one-row attention as the method executes it (Method.executed; "
                    "softmax decode 4*T*d); restore: steps + 1 forwards and steps backwards (the "
                    "attention's dQ only; dW_Q, an outer product, and Adam are element-wise, not counted)",
    dtypes=frozenset({"float32", "float64", "bfloat16"}),
    limits=limits,
    homepage="https://arxiv.org/abs/2512.13898",
)
