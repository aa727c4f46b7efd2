"""The linear-kernel interface: what a linear-attention context-parallel strategy needs of its local method.

Causal linear attention with a per-head decay (lightning attention, TransNormerLLM, plain linear attention)
does not merge partial results with log-sum-exps like softmax (:mod:`harness.interfaces.local_kernel`): it
carries a ``d x d`` state. Row ``p`` of a sequence, for q head ``h`` with decay rate ``s_h >= 0``, is::

    o_p = sum_{j <= p} exp(-s_h (p - j)) (q_p . k_j) v_j                     (no 1/sqrt(d) scaling)

A rank holding the contiguous rows ``[t0, t0 + C)`` gets the contribution of every earlier row through the
state those rows leave behind, ``KV_in = sum_{j < t0} exp(-s_h (t0 - 1 - j)) k_j^T v_j``::

    o_p = local causal part + exp(-s_h (p - t0 + 1)) q_p KV_in

so a strategy needs exactly three things of the method (``Method.local_kernel`` holding a
:class:`LinearKernel`, handed to the strategy as ``ctx.kernel``):

* ``rates(heads_q, options)`` — the decay rates ``s_h`` (float64 ``[Hq]``) of the run's options;
* ``state(k, v, rates, heads_q, options)`` — the decayed state a block of rows leaves behind
  (``sum_j exp(-s (C - 1 - j)) k_j^T v_j``, ``[B, Hq, d, d]``, at least float32), differentiable;
* ``attend(q, k, v, rates, options, state_in)`` — the block's output given the incoming state (None: zero),
  differentiable with respect to q, k, v and ``state_in``;
* optionally ``attend_state(q, k, v, rates, options, state_in)`` — (output, the state after the block) from
  one pass, for inference (prefill keeping the state for decode, decode steps); :func:`attend_and_state`
  falls back to ``attend`` + ``state`` without it.

Combining states across blocks is plain algebra on these (``KV_after = exp(-s C) KV_before + m``,
:func:`carry`), which the strategies do themselves. Tensors are ``[batch, rows, heads, head_dim]``; k/v may
have fewer heads than q (GQA: q head h uses kv head ``h // (Hq / Hkv)``); states are per q head.
Nothing here imports a plugin package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class LinearKernel:
    """A causal linear-attention method's local math (see the module docstring)."""

    name: str  # what runs, as recorded in a run's ``kernel`` field
    rates: Callable[[int, dict], torch.Tensor]
    state: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, dict], torch.Tensor]
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict, Optional[torch.Tensor]],
                     torch.Tensor]
    attend_state: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict,
                                     Optional[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]] = None


def attend_and_state(kernel: LinearKernel, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rates: torch.Tensor,
                     options: dict, state_in: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the rows' output, the state after them: ``exp(-s C) state_in + state(k, v)``), in one pass where the
    kernel has ``attend_state``."""
    if kernel.attend_state is not None:
        return kernel.attend_state(q, k, v, rates, options, state_in)
    out = kernel.attend(q, k, v, rates, options, state_in)
    grown = kernel.state(k, v, rates, q.shape[2], options)
    if state_in is None:
        return out, grown
    return out, carry(rates, k.shape[1], grown.dtype).to(grown.device) * state_in + grown


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype states are kept in: float32 for 16-bit inputs (fp32 state), else the input's."""
    return torch.promote_types(dtype, torch.float32)


def carry(rates: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """``exp(-s_h * rows)`` as a ``[1, Hq, 1, 1]`` factor: how much a state decays over ``rows`` rows."""
    return torch.exp(-rates.double() * rows).to(dtype).view(1, -1, 1, 1)


def state_bytes(batch: int, heads_q: int, head_dim: int, dtype: torch.dtype) -> int:
    """Bytes of one ``[B, Hq, d, d]`` state in :func:`state_dtype`."""
    return batch * heads_q * head_dim * head_dim * torch.empty((), dtype=state_dtype(dtype)).element_size()
