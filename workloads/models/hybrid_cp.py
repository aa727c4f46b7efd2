"""Context parallelism of the hybrid model (``hybrid_lm`` at ``world_size > 1``): the train step and the
prefill over a sequence split across the ranks of a group.

The residual stream lives in ONE token layout, the linear strategy's (``linear_strategy``, e.g. ``lasp2``:
contiguous chunks, which a d x d state needs) when the pattern has lightning layers, else the softmax
strategy's. Each layer's attention runs through its registered strategy (``problem.strategy(name)``) with a
:class:`~harness.interfaces.CPContext` built per layer (lightning layers differ in their decay: the layer's
index is an option of its kernel); a softmax strategy whose layout differs (``ring_zigzag``'s zigzag) gets its
q, k, v moved into its layout and its output moved back (point-to-point exchanges of the rows that change rank) (:class:`Relayout`,
differentiable: the inverse permutation backward), counted as the softmax layers' bytes. Weight gradients
are summed over the ranks (one all-reduce, as a CP group does before its optimizer step).

Bytes per rank are measured per layer type by giving each its own byte-counting
:class:`~harness.interfaces.Comm`: ``comm_bytes_softmax`` (strategy + relayouts), ``comm_bytes_linear`` and
``comm_bytes_grad_reduce``, over the first timed call. The check (rank 0's verdict counts) runs the same code
at ``check_tokens`` tokens and compares the gathered final hidden states and every weight gradient summed
over the ranks (train step), or the gathered hidden states (prefill), with one device's float64 model by the field's rule. The CP prefill times
the forward over the prompt and the next token's logits; the decode cache stays distributed (not gathered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from harness.interfaces import (
    CheckResult, Comm, CPContext, CPProblem, Unsupported, WorkloadProblem, WorkloadStep, check_against_eager,
)
from harness.masks import build_mask
from harness.run import Run
from workloads.models import hybrid as hm
from workloads.models import hybrid_problem as hp
from workloads.models.decoder_layers import linear_cross_entropy

KINDS = {hm.SOFTMAX: "softmax", hm.LIGHTNING: "linear"}


# ----- moving rows between layouts ----------------------------------------------------------------------

@dataclass(frozen=True)
class Permutation:
    """This rank's part of moving rows from layout ``src`` to layout ``dst`` (global positions per rank):
    ``send[j]``: my local rows (in ``src``) that rank j holds in ``dst``, in j's order; ``recv[j]``: where the
    rows from rank j go among my ``rows`` local rows in ``dst``."""

    send: list[torch.Tensor]
    recv: list[torch.Tensor]
    rows: int


def permutation(src: list[torch.Tensor], dst: list[torch.Tensor], rank: int) -> Permutation:
    total = sum(len(p) for p in src)
    owner, local = torch.empty(total, dtype=torch.long), torch.empty(total, dtype=torch.long)
    for r, pos in enumerate(src):
        owner[pos], local[pos] = r, torch.arange(len(pos))
    send = [local[pos[owner[pos] == rank]] for pos in dst]
    mine = owner[dst[rank]]
    recv = [torch.nonzero(mine == j).flatten() for j in range(len(src))]
    return Permutation(send, recv, len(dst[rank]))


RELAYOUT_TAG = 7_000_001  # point-to-point tag of the relayout messages


def _move(x: torch.Tensor, perm: Permutation, comm: Comm) -> torch.Tensor:
    """Send every other rank its rows and receive mine (point to point: the chunks differ in size, which
    gloo's all-to-all does not allow; rows that stay on this rank are copied)."""
    me = comm.rank
    out = x.new_empty((x.shape[0], perm.rows, *x.shape[2:]))
    sends = [(x.index_select(1, idx.to(x.device)).contiguous(), j) for j, idx in enumerate(perm.send)
             if j != me and len(idx)]
    recvs = [(x.new_empty((x.shape[0], len(idx), *x.shape[2:])), j) for j, idx in enumerate(perm.recv)
             if j != me and len(idx)]
    pending = comm.exchange(sends, recvs, tag=RELAYOUT_TAG)
    out[:, perm.recv[me].to(x.device)] = x.index_select(1, perm.send[me].to(x.device))
    for (_, j), part in zip(recvs, pending.wait()):
        out[:, perm.recv[j].to(x.device)] = part
    return out


class Relayout(torch.autograd.Function):
    """Rows from one layout to another (all-to-all); backward moves the gradient back the same way."""

    @staticmethod
    def forward(fctx, x: torch.Tensor, there: Permutation, back: Permutation, comm: Comm) -> torch.Tensor:
        fctx.back, fctx.comm = back, comm
        return _move(x, there, comm)

    @staticmethod
    def backward(fctx, grad: torch.Tensor):
        return _move(grad.contiguous(), fctx.back, fctx.comm), None, None, None


# ----- per-layer strategies ----------------------------------------------------------------------------

def _strategy_name(problem: WorkloadProblem, kind: str) -> str:
    return problem.params["linear_strategy" if kind == hm.LIGHTNING else "softmax_strategy"]


def cp_problem(problem: WorkloadProblem, shape: hm.HybridShape, kind: str, length: int, layer: int = 0) -> CPProblem:
    """The CP problem of one layer's attention over ``length`` tokens, as its strategy sees it."""
    lightning = kind == hm.LIGHTNING
    method_name = problem.params["linear_method" if lightning else "softmax_method"]
    method = problem.method(method_name)
    heads_kv = shape.heads if lightning else shape.heads_kv
    run = Run.make(method=method_name, strategy=_strategy_name(problem, kind), mask="causal", seqlen=length,
                   heads_q=shape.heads, heads_kv=heads_kv, head_dim=shape.head_dim, dtype=problem.run.dtype,
                   direction="fwd+bwd" if problem.phase == "train_step" else "fwd", batch=problem.batch,
                   world_size=problem.world_size, device=problem.run.device,
                   options={"layer": layer, "layers": shape.layers} if lightning else {})
    return CPProblem.of(run, build_mask("causal", length, shape.heads), problem.device, {method_name: method})


def cp_limits(problem: WorkloadProblem, shape: hm.HybridShape) -> Optional[str]:
    """Why this CP run cannot run exactly (None when it can): phase, then each layer kind's strategy."""
    if problem.phase not in ("train_step", "prefill"):
        return f"phase {problem.phase} at world size {problem.world_size} (context parallelism runs train_step, prefill)"
    for kind in sorted(set(shape.pattern)):
        strategy = problem.strategy(_strategy_name(problem, kind))
        why = strategy.unavailable_reason()
        if why:
            return f"strategy {strategy.name} unavailable: {why}"
        for length in {problem.seqlen, min(problem.seqlen, problem.params["check_tokens"])}:
            why = strategy.unsupported_reason(cp_problem(problem, shape, kind, length))
            if why:
                return f"{KINDS[kind]} layers: strategy {strategy.name} at {length} tokens: {why}"
    return None


class HybridCP:
    """One rank's CP plan of the whole model at ``length`` tokens: the model layout, a prepared context per
    layer, the relayouts, and the byte-counting communicators per layer type."""

    def __init__(self, problem: WorkloadProblem, shape: hm.HybridShape, length: int):
        self.problem, self.shape, self.length, self.rank = problem, shape, length, problem.rank
        native = problem.comm.native if problem.comm is not None else True
        self.comms = {name: Comm(native_collectives=native) for name in ("softmax", "linear", "grad_reduce")}
        model_kind = hm.LIGHTNING if hm.LIGHTNING in shape.pattern else hm.SOFTMAX
        self.positions = self._layout(model_kind, 0)
        self.attends: list[hm.Attend] = []
        softmax: Optional[hm.Attend] = None  # every softmax layer solves the same problem: one context
        for i, kind in enumerate(shape.pattern):
            if kind == hm.SOFTMAX:
                softmax = softmax or self._attend(kind, i)
                self.attends.append(softmax)
            else:
                self.attends.append(self._attend(kind, i))

    def _layout(self, kind: str, layer: int) -> list[torch.Tensor]:
        cpp = cp_problem(self.problem, self.shape, kind, self.length, layer)
        return self.problem.strategy(_strategy_name(self.problem, kind)).layout(cpp)

    def _attend(self, kind: str, layer: int) -> hm.Attend:
        strategy = self.problem.strategy(_strategy_name(self.problem, kind))
        cpp = cp_problem(self.problem, self.shape, kind, self.length, layer)
        comm = self.comms[KINDS[kind]]
        ctx = CPContext(problem=cpp, rank=self.rank, comm=comm, positions=strategy.layout(cpp))
        try:
            strategy.prepare(ctx)
        except Unsupported as e:
            raise Unsupported(f"{KINDS[kind]} layers: {strategy.name}: {e}") from None
        same = all(torch.equal(a, b) for a, b in zip(ctx.positions, self.positions))
        if same:
            return lambda q, k, v: strategy.attention(ctx, q, k, v)
        there = permutation(self.positions, ctx.positions, self.rank)
        back = permutation(ctx.positions, self.positions, self.rank)

        def attend(q, k, v):
            moved = [Relayout.apply(t, there, back, comm) for t in (q, k, v)]
            return Relayout.apply(strategy.attention(ctx, *moved), back, there, comm)
        return attend

    @property
    def local(self) -> torch.Tensor:
        return self.positions[self.rank]

    def reset(self) -> None:
        for comm in self.comms.values():
            comm.reset()

    def sent(self) -> dict[str, int]:
        return {f"comm_bytes_{name}": comm.sent_bytes for name, comm in self.comms.items()}

    def hidden(self, w: dict, tokens: torch.Tensor, recompute: bool = False) -> torch.Tensor:
        """The final hidden states of this rank's rows."""
        pos = self.local.to(tokens.device)
        return hm.forward(w, self.shape, tokens.index_select(1, pos), pos, self.attends, recompute=recompute)

    def loss(self, w: dict, tokens: torch.Tensor, recompute: bool = False,
             hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
        """This rank's share of the mean next-token loss (the ranks' shares sum to the loss)."""
        hidden = self.hidden(w, tokens, recompute) if hidden is None else hidden
        labels = tokens.index_select(1, self.local.to(tokens.device) + 1)
        return linear_cross_entropy(hidden, w["lm_head"], labels, 1.0 / (tokens.shape[0] * self.length))

    def reduce_grads(self, tensors: list[torch.Tensor]) -> None:
        """Sum the weight gradients over the ranks (one all-reduce of the flattened gradients)."""
        flat = torch.cat([t.grad.reshape(-1) for t in tensors])
        comm = self.comms["grad_reduce"]
        comm.count("all_reduce", 2 * (comm.world_size - 1) * flat.numel() * flat.element_size() // comm.world_size)
        dist.all_reduce(flat)
        start = 0
        for t in tensors:
            n = t.numel()
            t.grad.copy_(flat[start:start + n].view_as(t))
            start += n

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``x`` ``[B, T_r, ...]`` at their global positions (for the check)."""
        parts = self.comms["softmax"].all_gather_varlen(x.contiguous(), dim=1, sizes=[len(p) for p in self.positions])
        out = x.new_empty((x.shape[0], self.length, *x.shape[2:]))
        for pos, part in zip(self.positions, parts):
            out[:, pos.to(x.device)] = part
        return out


# ----- the phases -------------------------------------------------------------------------------------

def _references(problem: WorkloadProblem, shape: hm.HybridShape):
    return hp.reference_attends(problem, shape), hp.reference_dtype(problem, shape)


def build_cp_train_step(problem: WorkloadProblem) -> WorkloadStep:
    shape, weights, tokens = hp.setup(problem)
    params = problem.params
    plan = HybridCP(problem, shape, problem.seqlen)
    trained = hm.cast(weights, problem.dtype, requires_grad=True)
    leaves = list(trained.values())
    optimizer = torch.optim.AdamW(leaves, lr=params["lr"], weight_decay=0.01)
    measured: dict[str, int] = {}

    def call():
        first = not measured
        if first:
            plan.reset()
        optimizer.zero_grad(set_to_none=False)
        for t in leaves:
            if t.grad is None:
                t.grad = torch.zeros_like(t)
        loss = plan.loss(trained, tokens, params["recompute"])
        loss.backward()
        plan.reduce_grads(leaves)
        optimizer.step()
        if first:
            measured.update(plan.sent())
        return loss

    def check() -> CheckResult:
        c = hp.check_length(problem)
        small = HybridCP(problem, shape, c)
        w = hm.cast(weights, problem.dtype, requires_grad=True)
        hidden = small.hidden(w, tokens[:, :c + 1])
        grads = torch.autograd.grad(small.loss(w, tokens[:, :c + 1], hidden=hidden), list(w.values()))
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)  # the weight gradients, summed over the ranks
        gathered = small.gather_rows(hidden.detach())
        if problem.rank != 0:
            return CheckResult(ok=True)
        got, start = {"hidden": gathered}, 0
        for name, t in w.items():
            got[f"d{name}"] = flat[start:start + t.numel()].view_as(t)
            start += t.numel()
        refs, ref_dtype = _references(problem, shape)
        out = []
        for dtype in (ref_dtype, problem.dtype):
            wr = hm.cast(weights, dtype, requires_grad=True)
            hidden = hm.forward(wr, shape, tokens[:, :c], torch.arange(c, device=problem.device), refs)
            loss = linear_cross_entropy(hidden, wr["lm_head"], tokens[:, 1:c + 1], 1.0 / (problem.batch * c))
            g = torch.autograd.grad(loss, list(wr.values()))
            out.append({"hidden": hidden.detach(), **{f"d{k}": x for k, x in zip(wr, g)}})
        return check_against_eager(got, *out)

    tokens_n = problem.batch * problem.seqlen
    flops = shape.train_flops(tokens_n, params["recompute"]) + hp.attention_flops(problem, shape, "fwd+bwd", problem.seqlen)
    return WorkloadStep(
        call=call, flops=flops, check=check,
        metrics=lambda s: {"tokens_per_s": tokens_n / s, "ms": s * 1e3},
        fields={**hp.fields(problem, shape), "cp_layout_rows": len(plan.local)},
        inputs=(tokens, *leaves), per_rank=lambda: dict(measured),
    )


def build_cp_prefill(problem: WorkloadProblem) -> WorkloadStep:
    shape, weights, tokens = hp.setup(problem)
    plan = HybridCP(problem, shape, problem.seqlen)
    pos = plan.local.to(problem.device)
    local_tokens = tokens.index_select(1, pos)
    last = int(plan.local.argmax())  # the rank holding the last position returns the next token's logits
    holds_last = int(plan.local[last]) == problem.seqlen - 1
    measured: dict[str, int] = {}

    def call():
        first = not measured
        if first:
            plan.reset()
        with torch.no_grad():
            hidden = hm.forward(weights, shape, local_tokens, pos, plan.attends)
            out = hm.logits(weights, hidden[:, last:last + 1]) if holds_last else hidden[:, :0, :0]
        if first:
            measured.update(plan.sent())
        return out

    def check() -> CheckResult:
        c = hp.check_length(problem)
        small = HybridCP(problem, shape, c)
        p = small.local.to(problem.device)
        with torch.no_grad():
            got = small.gather_rows(hm.forward(weights, shape, tokens[:, :c].index_select(1, p), p, small.attends))
        if problem.rank != 0:
            return CheckResult(ok=True)
        refs, ref_dtype = _references(problem, shape)
        full = torch.arange(c, device=problem.device)
        with torch.no_grad():
            exact = hm.forward(hm.cast(weights, ref_dtype), shape, tokens[:, :c], full, refs)
            eager = hm.forward(weights, shape, tokens[:, :c], full, refs)
        return check_against_eager({"hidden": got}, {"hidden": exact}, {"hidden": eager})

    tokens_n = problem.batch * problem.seqlen
    flops = (shape.dense_flops(tokens_n) + shape.head_flops(problem.batch)
             + hp.attention_flops(problem, shape, "fwd", problem.seqlen))
    return WorkloadStep(
        call=call, flops=flops, check=check,
        metrics=lambda s: {"tokens_per_s": tokens_n / s, "ms": s * 1e3},
        fields={**hp.fields(problem, shape), "cp_layout_rows": len(plan.local)},
        inputs=(tokens, *weights.values()), per_rank=lambda: dict(measured),
    )
