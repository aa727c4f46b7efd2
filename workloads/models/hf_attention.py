"""Hugging Face transformers models running their attention through lcbench's attention functions.

transformers dispatches attention by name (``config._attn_implementation``) through its ``AttentionInterface``.
:func:`register` registers an :class:`AttentionAdapter` under a name of ours: HF hands it ``query`` ``[B, Hq, Tq,
d]``, ``key``/``value`` ``[B, Hkv, Tk, d]`` (the whole cache), ``scaling`` and its own mask; the adapter maps
the call to an lcbench :class:`~harness.interfaces.Problem` — the run's mask over ``Tk`` keys, every row when
``Tq == Tk`` (``fwd``, or ``fwd+bwd`` under autograd), else the last ``Tq`` rows (``Problem(direction="decode",
decode_tokens=Tq)``) — and calls the ``fn(q, k, v)`` on ``[B, T, H, d]`` a builder made for that problem
(a registered method's ``build``, or the float64 reference / eager attention of the checks). Built functions
are cached per shape, so a repeated call (a timed step) builds nothing. HF's own mask is never built: an
attention-mask function returning ``None`` is registered under the same name (the adapter applies the run's
mask; no padding is used).

:class:`StaticKVCache` is the KV cache the workloads hand to the model: preallocated per layer, written in
place (no per-token concatenation), and *frozen* on request — ``update`` then returns the cached keys and
values up to a position and writes nothing (qTTT's frozen cache: a step's own K/V are discarded).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

import torch

from harness.interfaces import AttentionFn, Problem, Unsupported
from harness.masks import build_mask
from harness.run import DECODE

Builder = Callable[[Problem], AttentionFn]
MAX_BUILT = 256  # attention functions kept per adapter (one per (rows, keys, direction) shape)


class AttentionAdapter:
    """The function HF calls for attention (see the module docstring)."""

    def __init__(self, builder: Builder, mask: str, mask_params: dict, options: dict, label: str):
        self.builder, self.mask, self.mask_params, self.options, self.label = builder, mask, mask_params, options, label
        self.built: OrderedDict[tuple, AttentionFn] = OrderedDict()

    def problem(self, query: torch.Tensor, key: torch.Tensor, needs_grad: bool) -> Problem:
        batch, heads_q, rows, dim = query.shape
        keys = key.shape[2]
        if rows == keys:
            direction = "fwd+bwd" if needs_grad else "fwd"
        elif rows < keys:
            direction = DECODE
        else:
            raise ValueError(f"{rows} query rows against {keys} keys: the cache must hold the query rows")
        return Problem(
            mask=build_mask(self.mask, keys, heads_q, **self.mask_params), batch=batch, seqlen=keys,
            heads_q=heads_q, heads_kv=key.shape[1], head_dim=dim, dtype=query.dtype, device=query.device,
            options=self.options, direction=direction, decode_tokens=rows if direction == DECODE else 1,
        )

    def fn_for(self, query: torch.Tensor, key: torch.Tensor, needs_grad: bool) -> AttentionFn:
        shape = (tuple(query.shape), tuple(key.shape), query.dtype, query.device, needs_grad)
        fn = self.built.get(shape)
        if fn is None:
            fn = self.builder(self.problem(query, key, needs_grad))
            self.built[shape] = fn
            while len(self.built) > MAX_BUILT:
                self.built.popitem(last=False)
        else:
            self.built.move_to_end(shape)
        return fn

    def __call__(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: Optional[torch.Tensor], scaling: Optional[float] = None, dropout: float = 0.0,
                 sliding_window: Optional[int] = None, **_: object) -> tuple[torch.Tensor, None]:
        dim = query.shape[-1]
        if scaling is not None and abs(scaling - dim**-0.5) > 1e-12 * dim:
            raise Unsupported(f"{self.label}: attention scaling {scaling} is not 1/sqrt(head_dim)")
        if sliding_window is not None or dropout:
            raise Unsupported(f"{self.label}: HF sliding-window layers and attention dropout are not mapped")
        needs_grad = torch.is_grad_enabled() and query.requires_grad
        fn = self.fn_for(query, key, needs_grad)
        out = fn(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))  # [B, Tq, Hq, d]
        if needs_grad and not out.requires_grad:
            raise Unsupported(f"{self.label}: its path for {query.shape[2]} query rows against {key.shape[2]} keys "
                              f"has no backward (a gradient with respect to q is needed)")
        return out, None


def _no_mask(*args: object, **kwargs: object) -> None:
    return None


def register(name: str, adapter: AttentionAdapter) -> str:
    """Register ``adapter`` as transformers attention implementation ``name`` (and HF's mask as none)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, adapter)
    AttentionMaskInterface.register(name, _no_mask)
    return name


class StaticKVCache:
    """A preallocated KV cache that transformers models write through ``update`` (duck-typed ``Cache``).

    ``length`` tokens are held; ``update`` appends the step's K/V at ``length`` and returns views up to the new
    end. After :meth:`freeze` (``end``), ``update`` returns the cached K/V ``[:end]`` and writes nothing."""

    def __init__(self, layers: int, batch: int, heads_kv: int, head_dim: int, capacity: int, dtype: torch.dtype,
                 device: torch.device):
        shape = (batch, heads_kv, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.length = 0
        self.frozen_end: Optional[int] = None

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def reset(self, length: int = 0) -> None:
        """Forget everything after ``length`` tokens (the buffers are reused) and unfreeze."""
        self.length, self.frozen_end = length, None

    def freeze(self, end: int) -> None:
        if end > self.length:
            raise ValueError(f"cannot freeze at {end}: the cache holds {self.length} tokens")
        self.frozen_end = end

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        if self.frozen_end is not None:
            end = self.frozen_end
            return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]
        start, n = self.length, key_states.shape[2]
        if start + n > self.capacity:
            raise ValueError(f"KV cache full: {start} + {n} tokens > capacity {self.capacity}")
        with torch.no_grad():
            self.keys[layer_idx][:, :, start:start + n] = key_states
            self.values[layer_idx][:, :, start:start + n] = value_states
        if layer_idx == len(self.keys) - 1:
            self.length = start + n
        return self.keys[layer_idx][:, :, :start + n], self.values[layer_idx][:, :, :start + n]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def tensors(self) -> list[torch.Tensor]:
        return self.keys + self.values

    def nbytes(self, tokens: Optional[int] = None) -> int:
        tokens = self.length if tokens is None else tokens
        t = self.keys[0]
        return 2 * len(self.keys) * t.shape[0] * t.shape[1] * tokens * t.shape[3] * t.element_size()
