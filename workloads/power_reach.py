"""``power_reach``: the receptive field of a mask through stacked layers — exactly on its block graph, and
empirically through real attention layers (PowerAttention, arXiv 2503.03588, Appendix A; REFERENCE.md §5b).

The question: through how many layers does the last token see every earlier one? PowerAttention claims
``log2(blocks)`` layers, a sliding window of the same budget only grows linearly, dilated and LongNet patterns
leave holes. The run's mask is the pattern; the run's length and the pattern's block fix the block graph.

Phases:
- ``exact_reach``: the timed call is :func:`harness.masks.reach.receptive_field` (block graph + boolean powers,
  O(S·R), so 128K is cheap). Metrics: ``coverage_L1 .. coverage_L<layers>``, ``holes`` (at ``layers``),
  ``holes_limit`` (at any depth), ``layers_to_full`` (absent when never complete), ``blocks``.
- ``reach``: ``layers`` residual attention layers with random weights through a registered method (param
  ``method``) under the mask; the timed call is one gradient pass of the last token's output with respect to
  the input. The input positions with a non-zero gradient are the empirical receptive field, measured at every
  depth 1..``layers`` (outside the timed region) and checked token for token against the exact analysis — a
  mismatch makes the run ``invalid``. To keep the study at 32K-128K cheap, the layers run on the SAME block
  graph with ``tokens_per_block`` tokens per block (the pattern's ``block`` parameter set to it): the build
  checks that the graph is unchanged and reports the run unsupported otherwise (a pattern whose other
  parameters count tokens); ``tokens_per_block: 0`` runs at the run's own length.
  Metrics: ``coverage_empirical`` / ``coverage_exact`` (at ``layers``), ``coverage_L<l>`` (empirical, per
  depth), ``holes``, ``layers_to_full`` (exact), ``tokens`` (the length the layers ran at).

``layers: 0`` means ``ceil(log2(blocks)) + 2``; patterns without a ``block`` parameter use param ``block``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from harness.interfaces import (
    CheckResult, Metric, Problem, Unsupported, Workload, WorkloadProblem, WorkloadStep,
)
from harness.masks import Mask, build_mask, get_mask_pattern
from harness.masks.reach import (
    ReceptiveField, block_graph, default_layers, pattern_block, reached_tokens, receptive_field,
)
from harness.interfaces.params import integer, registered, seed
from workloads.models.attention_block import Attend, AttentionShape, AttentionWeights, attention_block, seeded_tokens

EXACT, EMPIRICAL = "exact_reach", "reach"
PHASES = (EMPIRICAL, EXACT)
MAX_TABULATED = 24  # coverage_L1 .. coverage_L24 are declared metrics (log2(16M tokens / 1) + 2 fits)
BLOCK_PARAM = "block"  # the parameter of block-defined patterns (harness.masks.patterns.sparse and others)


# ----- the pattern and its scaled twin ---------------------------------------------------------------------

def run_mask(problem: WorkloadProblem) -> Mask:
    run = problem.run
    return build_mask(run.mask, run.seqlen, problem.params["heads"], **run.mask_kwargs)


def analysis_block(mask: Mask, problem: WorkloadProblem) -> int:
    return pattern_block(mask, problem.params["block"])


def _layers(problem: WorkloadProblem, blocks: int) -> int:
    return problem.params["layers"] or default_layers(blocks)


def scaled_mask(problem: WorkloadProblem, mask: Mask, block: int) -> tuple[Mask, int]:
    """The pattern with ``tokens_per_block`` tokens per block (and the block the analysis uses on it).

    Raises :class:`Unsupported` when the scaled pattern's block graph differs from the run's."""
    tpb = problem.params["tokens_per_block"]
    if tpb == 0:
        return mask, block
    run = problem.run
    graph = block_graph(mask, block)
    params = dict(run.mask_kwargs)
    if BLOCK_PARAM in get_mask_pattern(run.mask).defaults:
        params[BLOCK_PARAM] = tpb
    scaled = build_mask(run.mask, graph.shape[0] * tpb, problem.params["heads"], **params)
    if not torch.equal(block_graph(scaled, tpb), graph):
        raise Unsupported(f"mask {run.mask}: its block graph at {graph.shape[0]} blocks of {tpb} tokens differs "
                          f"from {run.seqlen} tokens in blocks of {block} (a parameter counts tokens); "
                          f"set tokens_per_block: 0 to measure at full length")
    return scaled, tpb


# ----- the stacked layers ----------------------------------------------------------------------------------

@dataclass
class Stack:
    """``layers`` residual attention layers: ``x <- x + attention_block(x)`` with seeded random weights."""

    weights: list[AttentionWeights]
    attend: Attend

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream after each layer."""
        outs = []
        for w in self.weights:
            x = x + attention_block(x, w, self.attend)
            outs.append(x)
        return outs


def dependence(output_row: torch.Tensor, x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``[T]`` bool: the input positions with a non-zero gradient of ``<output_row, direction>``."""
    (grad,) = torch.autograd.grad((output_row * direction).sum(), x, retain_graph=True)
    return grad[0].abs().amax(-1) > 0


def empirical_reach(stack: Stack, x: torch.Tensor, seed: int) -> torch.Tensor:
    """``[layers, T]`` bool: row ``l-1`` = the positions the last token's output after ``l`` layers depends on."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(x.shape[-1], generator=g).to(x.dtype).to(x.device)
    x = x.detach().requires_grad_(True)
    return torch.stack([dependence(out[:, -1], x, direction) for out in stack.outputs(x)]).cpu()


def _shape(problem: WorkloadProblem) -> AttentionShape:
    return AttentionShape(problem.params["heads"], problem.params["heads"], problem.params["head_dim"])


def attention_problem(problem: WorkloadProblem, mask: Mask) -> Problem:
    shape = _shape(problem)
    return Problem(mask=mask, batch=1, seqlen=mask.seqlen, heads_q=shape.heads_q, heads_kv=shape.heads_kv,
                   head_dim=shape.head_dim, dtype=problem.dtype, device=problem.device, direction="fwd+bwd")


# ----- phases ----------------------------------------------------------------------------------------------

def _coverage_metrics(coverages: list[float]) -> dict[str, float]:
    return {f"coverage_L{i}": c for i, c in enumerate(coverages[:MAX_TABULATED], start=1)}


def _full(field: ReceptiveField) -> dict[str, float]:
    return {} if field.layers_to_full is None else {"layers_to_full": float(field.layers_to_full)}


def build_exact(problem: WorkloadProblem) -> WorkloadStep:
    mask = run_mask(problem)
    block = analysis_block(mask, problem)
    blocks = -(-mask.seqlen // block)
    layers = _layers(problem, blocks)
    field = receptive_field(mask, block, layers)

    def check() -> CheckResult:
        # Invariants of reachability: monotone in depth, the last block always reached.
        counts = field.counts()
        ok = all(a <= b for a, b in zip(counts, counts[1:])) and bool(field.reached[:, -1].all())
        return CheckResult(ok=ok, detail="" if ok else f"coverage is not monotone in depth: {counts}")

    def metrics(seconds: float) -> dict[str, float]:
        return {**_coverage_metrics([r["coverage"] for r in field.rows()]), "holes": float(field.holes(layers)),
                "holes_limit": float(field.holes_limit), "blocks": float(field.blocks), **_full(field),
                "ms": seconds * 1e3}

    return WorkloadStep(
        call=lambda: receptive_field(mask, block, layers), flops=field.flops, check=check, metrics=metrics,
        fields={"block": block, "layers": layers, "density": mask.density(), "reached_blocks": field.counts()},
    )


def build_empirical(problem: WorkloadProblem) -> WorkloadStep:
    params = problem.params
    mask = run_mask(problem)
    block = analysis_block(mask, problem)
    layers = _layers(problem, -(-mask.seqlen // block))
    small, small_block = scaled_mask(problem, mask, block)
    field = receptive_field(small, small_block, layers)
    attn = attention_problem(problem, small)
    method = problem.method(params["method"])
    why = method.unsupported_reason(attn)
    if why:
        raise Unsupported(f"method {method.name}: {why}")
    shape = _shape(problem)
    stack = Stack([AttentionWeights.seeded(shape, params["seed"] + 1 + i, problem.dtype, problem.device)
                   for i in range(layers)], method.build(attn))
    x = seeded_tokens(1, small.seqlen, shape.hidden, params["seed"], problem.dtype, problem.device)
    measured = empirical_reach(stack, x, params["seed"])  # outside the timed region: every depth
    expected = torch.stack([reached_tokens(field, depth) for depth in range(1, layers + 1)])
    direction = torch.randn(shape.hidden, generator=torch.Generator().manual_seed(params["seed"]))
    direction = direction.to(problem.dtype).to(problem.device)

    def call():
        xg = x.detach().requires_grad_(True)
        out = stack.outputs(xg)[-1][:, -1]
        return torch.autograd.grad((out * direction).sum(), xg)

    def check() -> CheckResult:
        wrong = (measured != expected).sum(-1)
        if not bool(wrong.any()):
            return CheckResult(ok=True, errors={"mismatched_tokens": 0.0})
        depth = int(wrong.nonzero()[0]) + 1
        return CheckResult(ok=False, errors={"mismatched_tokens": float(wrong.sum())},
                           detail=f"after {depth} layers {int(wrong[depth - 1])} of {small.seqlen} tokens differ "
                                  f"(empirical reaches {int(measured[depth - 1].sum())}, exact "
                                  f"{int(expected[depth - 1].sum())})")

    tokens = small.seqlen
    # frozen weights: each projection's forward and its input's gradient; the attention's whole backward
    per_layer = 2 * shape.projection_flops(tokens) + method.executed_call(attn, "fwd+bwd")

    def metrics(seconds: float) -> dict[str, float]:
        coverage = measured.float().mean(-1).tolist()
        return {**_coverage_metrics(coverage), "coverage_empirical": coverage[-1],
                "coverage_exact": field.coverage(layers), "holes": float(field.holes(layers)), **_full(field),
                "tokens": float(tokens), "ms": seconds * 1e3}

    return WorkloadStep(
        call=call, flops=layers * per_layer, check=check, metrics=metrics,
        fields={"block": block, "layers": layers, "tokens_per_block": small_block, "reach_tokens": tokens,
                "density": mask.density(), "reached_blocks": field.counts()},
        inputs=(x, *[t for w in stack.weights for _, t in w.tensors()]),
    )


PHASE_BUILDERS = {EMPIRICAL: build_empirical, EXACT: build_exact}


def build(problem: WorkloadProblem) -> WorkloadStep:
    return PHASE_BUILDERS[problem.phase](problem)


SPECS = {
    "method": registered("method"), "heads": integer(ge=1), "head_dim": integer(ge=1),
    "layers": integer(ge=0, le=4096, doc="0: ceil(log2(blocks)) + 2"),
    "tokens_per_block": integer(ge=0, doc="0: the run's own length"),
    "block": integer(ge=1, doc="the block of patterns without a block parameter"), "seed": seed(),
}


def limits(problem: WorkloadProblem) -> Optional[str]:
    params = problem.params
    if problem.phase == EMPIRICAL:
        method = problem.method(params["method"])
        why = method.unavailable_reason()
        if why:
            return f"method {method.name} unavailable: {why}"
    return None


WORKLOAD = Workload(
    name="power_reach",
    summary="receptive field of the last token through stacked masked layers: exact (block graph) and "
            "empirical (gradients of real attention layers), token for token",
    phases=PHASES,
    params={"method": "blocksparse", "heads": 2, "head_dim": 8, "layers": 0, "tokens_per_block": 4,
            "block": 256, "seed": 0},
    build=build,
    specs=SPECS,
    metrics=(
        *(Metric(f"coverage_L{i}", "fraction", "higher", f"share of the blocks the last one reaches in {i} layers")
          for i in range(1, MAX_TABULATED + 1)),
        Metric("coverage_exact", "fraction", "higher", "coverage at `layers` from the block graph"),
        Metric("coverage_empirical", "fraction", "higher", "coverage at `layers` from non-zero gradients"),
        Metric("holes", "blocks", "lower", "blocks before the last not reached at `layers`"),
        Metric("holes_limit", "blocks", "lower", "blocks never reached, at any depth"),
        Metric("layers_to_full", "layers", "lower", "first depth reaching every block (absent: never)"),
        Metric("blocks", "blocks", "lower", "blocks up to the last (the coverage denominator)"),
        Metric("tokens", "tokens", "lower", "length the empirical layers ran at"),
        Metric("ms", "ms", "lower", "time of the timed call"),
    ),
    flop_convention="reach: per layer, the projections' forward and input gradient (frozen weights) + the "
                    "FLOPs the method executes for the attention's fwd+bwd (Method.executed); exact_reach: 2*blocks^2 per reachability step (the boolean "
                    "vector-matrix products), the O(S*R) block-graph construction not counted",
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    limits=limits,
)
