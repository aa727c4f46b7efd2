"""A randomly initialised Hugging Face ``Qwen3ForCausalLM`` (no download) and its matmul FLOP model.

:class:`ModelShape` holds the config numbers a workload's parameters choose (the flavors: ``tiny`` for CPU, the
real Qwen3-1.7B / Qwen3-4B shapes for GPU); :func:`build_model` makes the HF model with lcbench's attention
registered (:mod:`workloads.models.hf_attention`); :class:`Session` is one model + one KV cache + one token
stream — prefill, a span forward against the frozen cache, a decode step.

The FLOP model counts matmuls (what ``torch.utils.flop_counter.FlopCounterMode`` counts): per token and layer
the projections ``q, k, v, o`` and the SwiGLU MLP, the LM head on the tokens whose logits are needed, and the
attention, whose FLOPs the caller supplies (a method's own ``flops`` — the field's exact-area convention — or
what a kernel really executes). Norms, rotary embeddings, softmax and the loss are not counted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from workloads.models.hf_attention import StaticKVCache

SHAPE_KEYS = ("layers", "hidden", "intermediate", "heads_q", "heads_kv", "head_dim", "vocab", "tie_embeddings")
# Qwen3's published configs (config.json of Qwen/Qwen3-1.7B and Qwen/Qwen3-4B); tiny: a CPU model of the same form.
FLAVORS = {
    "tiny": {"layers": 2, "hidden": 128, "intermediate": 384, "heads_q": 4, "heads_kv": 2, "head_dim": 32,
             "vocab": 1024, "tie_embeddings": True},
    "qwen3-1.7b": {"layers": 28, "hidden": 2048, "intermediate": 6144, "heads_q": 16, "heads_kv": 8, "head_dim": 128,
                   "vocab": 151936, "tie_embeddings": True},
    "qwen3-4b": {"layers": 36, "hidden": 2560, "intermediate": 9728, "heads_q": 32, "heads_kv": 8, "head_dim": 128,
                 "vocab": 151936, "tie_embeddings": True},
}
ROPE_THETA = 1_000_000.0

# attention FLOPs of one layer: (query rows, position of the first row, keys, direction) -> FLOPs
AttentionFlops = Callable[[int, int, int, str], float]


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads_q: int
    heads_kv: int
    head_dim: int
    vocab: int
    tie_embeddings: bool = True

    @staticmethod
    def of(params: dict) -> "ModelShape":
        return ModelShape(**{k: params[k] for k in SHAPE_KEYS})

    # ----- matmul FLOPs per token ---------------------------------------------------------------------------
    @property
    def q_flops(self) -> float:
        return 2.0 * self.hidden * self.heads_q * self.head_dim

    @property
    def kv_flops(self) -> float:
        return 2.0 * 2 * self.hidden * self.heads_kv * self.head_dim

    @property
    def o_flops(self) -> float:
        return 2.0 * self.heads_q * self.head_dim * self.hidden

    @property
    def mlp_flops(self) -> float:
        return 3 * 2.0 * self.hidden * self.intermediate

    @property
    def layer_flops(self) -> float:
        """Forward matmul FLOPs of one layer per token, attention itself excluded."""
        return self.q_flops + self.kv_flops + self.o_flops + self.mlp_flops

    @property
    def head_flops(self) -> float:
        return 2.0 * self.hidden * self.vocab

    def parameters(self) -> int:
        per_layer = (self.layer_flops / 2) + 2 * self.head_dim + 2 * self.hidden  # weights + q/k norms + 2 norms
        embed = self.vocab * self.hidden * (1 if self.tie_embeddings else 2)
        return int(self.layers * per_layer + embed + self.hidden)

    def kv_bytes(self, tokens: int, element_bytes: int, batch: int = 1) -> int:
        return 2 * self.layers * batch * tokens * self.heads_kv * self.head_dim * element_bytes


def prefill_flops(shape: ModelShape, tokens: int, attention: AttentionFlops, batch: int = 1) -> float:
    """A prefill of ``tokens`` (logits of the last token only)."""
    return batch * (shape.layers * (tokens * shape.layer_flops + attention(tokens, 0, tokens, "fwd"))
                    + shape.head_flops)


def decode_flops(shape: ModelShape, position: int, attention: AttentionFlops, batch: int = 1) -> float:
    """One decoded token at ``position`` (``position`` tokens already cached)."""
    return batch * (shape.layers * (shape.layer_flops + attention(1, position, position + 1, "decode"))
                    + shape.head_flops)


@dataclass(frozen=True)
class StepFlops:
    """The FLOPs of one qTTT step (a span of ``span`` tokens at ``start`` against the frozen cache), in parts."""

    forward: float  # matmuls of the span's forward, attention excluded (k/v projections included: HF runs them)
    backward: float  # input gradients back to layer 0's q_proj, and the W_Q weight gradients
    attention_forward: float
    attention_backward: float

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.attention_forward + self.attention_backward


def step_flops(shape: ModelShape, start: int, span: int, attention: AttentionFlops, batch: int = 1) -> StepFlops:
    """Matmul FLOPs of one qTTT step. Only W_Q needs a gradient, so the backward computes the LM head's, the o
    projections' and the MLPs' input gradients, q_proj's weight gradient in every layer and its input gradient
    in every layer but the first (the embeddings need none); k/v projections get none (their output is
    discarded for the frozen cache). ``attention(rows, start, keys, "fwd" | "bwd")`` gives the attention parts."""
    keys = start + span
    fwd = span * (shape.layers * shape.layer_flops + shape.head_flops)
    bwd = span * (shape.head_flops + shape.layers * (shape.o_flops + shape.mlp_flops + shape.q_flops)
                  + (shape.layers - 1) * shape.q_flops)
    att_f = shape.layers * attention(span, start, keys, "fwd")
    att_b = shape.layers * attention(span, start, keys, "bwd")
    return StepFlops(batch * fwd, batch * bwd, batch * att_f, batch * att_b)


def equal_flop_tokens(shape: ModelShape, context: int, budget: float, attention: AttentionFlops,
                      batch: int = 1) -> float:
    """Thinking tokens with the FLOPs of ``budget``: ``budget`` / the FLOPs of one decode step at context
    ``context`` (the definition the comparison uses; later tokens cost a little more attention)."""
    return budget / decode_flops(shape, context, attention, batch)


# ----- the model ------------------------------------------------------------------------------------------

def config(shape: ModelShape, attn_implementation: str, max_positions: int):
    from transformers import Qwen3Config

    cfg = Qwen3Config(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads_q, num_key_value_heads=shape.heads_kv,
        head_dim=shape.head_dim, max_position_embeddings=max_positions, tie_word_embeddings=shape.tie_embeddings,
        rope_theta=ROPE_THETA, attention_dropout=0.0,
    )
    cfg._attn_implementation = attn_implementation
    return cfg


def build_model(shape: ModelShape, attn_implementation: str, max_positions: int, seed: int, dtype: torch.dtype,
                device: torch.device) -> torch.nn.Module:
    """A seeded random ``Qwen3ForCausalLM`` in ``dtype`` on ``device`` (eval mode, no parameter needs grad)."""
    from transformers import Qwen3ForCausalLM

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen3ForCausalLM(config(shape, attn_implementation, max_positions))
    model = model.to(dtype).eval()
    model.requires_grad_(False)
    return model


def twin(model: torch.nn.Module, attn_implementation: str, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` in ``dtype`` whose attention runs through another registered implementation."""
    other = copy.deepcopy(model).to(dtype)
    other.config._attn_implementation = attn_implementation
    return other


def q_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """W_Q of every layer (the q_proj weights; Qwen3 has no attention bias)."""
    return [layer.self_attn.q_proj.weight for layer in model.model.layers]


class Session:
    """One model, one KV cache of ``capacity`` tokens and the token stream ``tokens`` ``[B, >= capacity]``."""

    def __init__(self, model: torch.nn.Module, shape: ModelShape, tokens: torch.Tensor, capacity: int):
        self.model, self.shape, self.tokens = model, shape, tokens
        p = next(model.parameters())
        self.cache = StaticKVCache(shape.layers, tokens.shape[0], shape.heads_kv, shape.head_dim, capacity,
                                   p.dtype, p.device)

    def _forward(self, start: int, end: int, logits_to_keep: int = 0) -> torch.Tensor:
        pos = torch.arange(start, end, device=self.tokens.device).unsqueeze(0)
        out = self.model(input_ids=self.tokens[:, start:end], position_ids=pos, cache=self.cache, use_cache=True,
                         attention_mask={"full_attention": None}, logits_to_keep=logits_to_keep)
        return out.logits

    def prefill(self, tokens: int) -> torch.Tensor:
        """Fill the cache with the first ``tokens`` tokens; the last token's logits ``[B, 1, V]``."""
        self.cache.reset(0)
        with torch.no_grad():
            return self._forward(0, tokens, logits_to_keep=1)

    def span_loss(self, start: int, span: int) -> torch.Tensor:
        """Next-token loss (cross entropy in at least float32) of tokens ``start .. start+span-1`` predicting the next ones,
        attending to the frozen cache ``[0, start + span)`` (the span's own K/V are the cached ones)."""
        self.cache.freeze(start + span)
        try:
            logits = self._forward(start, start + span)
        finally:
            self.cache.frozen_end = None
        labels = self.tokens[:, start + 1:start + span + 1]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())

    def decode(self, position: int, count: int) -> torch.Tensor:
        """Decode ``count`` tokens from ``position`` (teacher-forced: the stream's tokens; the cache is cut to
        ``position`` first). Logits ``[B, count, V]``."""
        self.cache.reset(position)
        out = []
        with torch.no_grad():
            for i in range(count):
                out.append(self._forward(position + i, position + i + 1, logits_to_keep=1))
        return torch.cat(out, 1)


def optional_import_error() -> Optional[str]:
    try:
        import transformers  # noqa: F401
        from transformers import AttentionInterface, Qwen3ForCausalLM  # noqa: F401
    except Exception as e:
        return f"transformers with Qwen3 not importable ({type(e).__name__}: {e}); pip install 'transformers>=5.24'"
    return None
