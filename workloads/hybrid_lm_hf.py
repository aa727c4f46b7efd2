"""``hybrid_lm_hf``: the peer of ``hybrid_lm`` — Hugging Face transformers' ``MiniMaxForCausalLM`` (pure torch)
with the same weights, timed on the same prefill and decode.

The same parameters and flavors as ``hybrid_lm`` build a random-initialised ``MiniMaxConfig`` (no download):
``layer_types`` from the pattern (``L`` -> ``linear_attention``, ``S`` -> ``full_attention``), ``block_size``
256, one expert with top-1 routing (its router's softmax over one expert is exactly 1, so the MoE block is
the dense SwiGLU MLP), the residual factors, RoPE base. :func:`hf_state_dict` maps our weights onto it
(transposed ``[out, in]`` linears; a lightning layer's fused QKV is interleaved per head in HF, ``[q_h k_h v_h]``
per head h). Differences HF cannot express are limits (reported as unsupported): HF's MiniMax applies RoPE to
the whole head (no partial rotary), and its layer wiring is MiniMax's (``residual = minimax``). HF's decay
factor is ``1 - l / (L - 1 + 1e-5) + 1e-5`` (ours and MiniMax-M1's code: ``1 - l / (L - 1) + 1e-5``): a
relative difference below 1e-5 of the rate, inside the check's float32 tolerance.

Phases: ``prefill`` (``model(input_ids, use_cache=True)``: the forward and the cache, next-token logits) and
``decode`` (one ``model(new_ids, cache=...)`` step after a real prefill of ``seqlen - decode_tokens`` tokens;
HF's cache grows by the new rows, so every timed call starts from a copy of the prefilled cache — the copy is
timed too and recorded as ``cache_copy_ms`` so a reader can subtract it). Check: HF's logits against ours (the
registered methods, same weights) on ``check_tokens`` tokens, by the field's rule against our float64 model.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from dataclasses import replace
from typing import Optional

import torch

from harness.interfaces import CheckResult, Metric, Workload, WorkloadProblem, WorkloadStep, check_against_eager
from harness.interfaces.method import dense_matmul_flops
from harness.run import DECODE
from workloads.models import hybrid_problem as hp
from workloads.models import hybrid as hm

LAYER_TYPES = {hm.LIGHTNING: "linear_attention", hm.SOFTMAX: "full_attention"}
# hybrid_lm's flavors with RoPE on the whole head (HF's MiniMax has no partial rotary): run hybrid_lm with
# the same rope_dim to compare like with like.
BLOCK_SIZE = 256  # MiniMaxConfig.block_size: the lightning layers' chunk in prefill
EXPERTS = 1  # num_local_experts: the router is a hidden x 1 matmul per token and layer


FLAVORS = {name: {**values, "rope_dim": values["head_dim"]} for name, values in hp.FLAVORS.items()}
PARAMS = {**hp.PARAMS, **FLAVORS[hp.PARAMS["flavor"]]}


def probe() -> Optional[str]:
    if importlib.util.find_spec("transformers") is None:
        return "transformers is not installed (pip install transformers)"
    from transformers import MiniMaxConfig  # noqa: F401 — older releases have no MiniMax

    return None


def hf_config(shape: hm.HybridShape):
    from transformers import MiniMaxConfig

    return MiniMaxConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.heads_kv,
        head_dim=shape.head_dim, rms_norm_eps=shape.eps, max_position_embeddings=1 << 20,
        num_local_experts=EXPERTS, num_experts_per_tok=1, layer_types=[LAYER_TYPES[k] for k in shape.pattern],
        block_size=BLOCK_SIZE, rope_parameters={"rope_type": "default", "rope_theta": shape.rope_base},
        full_attn_alpha_factor=shape.alpha, linear_attn_alpha_factor=shape.alpha, mlp_alpha_factor=shape.alpha,
        full_attn_beta_factor=1.0, linear_attn_beta_factor=1.0, mlp_beta_factor=1.0, tie_word_embeddings=False,
    )


def hf_state_dict(w: dict[str, torch.Tensor], shape: hm.HybridShape) -> dict[str, torch.Tensor]:
    """Our weights as ``MiniMaxForCausalLM``'s state dict."""
    h, d = shape.heads, shape.head_dim
    out = {"model.embed_tokens.weight": w["embed"], "model.norm.weight": w["final_norm"], "lm_head.weight": w["lm_head"].t()}
    for i, kind in enumerate(shape.pattern):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = w[f"{i}.norm1"]
        out[p + "post_attention_layernorm.weight"] = w[f"{i}.norm2"]
        gate, up = w[f"{i}.w_gate_up"].chunk(2, dim=1)
        out[p + "mlp.experts.gate_up_proj"] = torch.cat([gate, up], dim=1).t().unsqueeze(0)
        out[p + "mlp.experts.down_proj"] = w[f"{i}.w_down"].t().unsqueeze(0)
        out[p + "mlp.gate.weight"] = torch.zeros(1, shape.hidden, dtype=w["embed"].dtype)
        a = p + "self_attn."
        if kind == hm.LIGHTNING:
            qkv = w[f"{i}.wqkv"].view(shape.hidden, 3, h, d).transpose(1, 2).reshape(shape.hidden, 3 * h * d)
            out[a + "qkv_proj.weight"] = qkv.t()
            out[a + "output_gate.weight"] = w[f"{i}.wgate"].t()
            out[a + "norm.weight"] = w[f"{i}.head_norm"]
            out[a + "out_proj.weight"] = w[f"{i}.wo"].t()
        else:
            q, k, v = w[f"{i}.wqkv"].split([h * d, shape.heads_kv * d, shape.heads_kv * d], dim=1)
            out[a + "q_proj.weight"], out[a + "k_proj.weight"], out[a + "v_proj.weight"] = q.t(), k.t(), v.t()
            out[a + "o_proj.weight"] = w[f"{i}.wo"].t()
    return {k: v.contiguous() for k, v in out.items()}


def hf_model(shape: hm.HybridShape, weights: dict, dtype: torch.dtype, device: torch.device):
    from transformers import MiniMaxForCausalLM

    model = MiniMaxForCausalLM(hf_config(shape)).to(dtype=dtype, device=device).eval()
    if dtype == torch.float64:  # HF's default experts path (torch grouped_mm) has no float64 kernel
        model.config._experts_implementation = "eager"
    missing, unexpected = model.load_state_dict(hf_state_dict(weights, shape), strict=False)
    buffers = {n for n, _ in model.named_buffers()}
    missing = [m for m in missing if m not in buffers]
    if missing or unexpected:
        raise RuntimeError(f"state-dict mapping onto MiniMaxForCausalLM: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def limits(problem: WorkloadProblem) -> Optional[str]:
    shape = hp.model_shape(problem.params)
    if shape.rope_dim != shape.head_dim:
        return f"rope_dim={shape.rope_dim}: HF's MiniMax rotates the whole head (set rope_dim={shape.head_dim})"
    if shape.residual != "minimax":
        return f"residual={shape.residual}: HF's MiniMaxDecoderLayer wires MiniMax's residual only"
    return hp.limits(problem)


def decode_inputs(past: int, rows: int, device: torch.device) -> dict:
    """The new rows' positions and masks, passed to HF explicitly: transformers 5.24's MiniMax infers both from
    layer 0's KV length (``cache.get_seq_length()``, the causal mask's key count), which is 0 when layer 0 is a
    lightning layer (MiniMax's own ``LLLLLLLS``): its decode would restart RoPE at 0 and its softmax layers
    would attend to the new rows only. Softmax layers: row ``i`` sees keys ``0 .. past + i``; lightning layers
    need no mask (no padding)."""
    positions = torch.arange(past, past + rows, device=device)
    allowed = torch.arange(past + rows, device=device).view(1, -1) <= positions.view(-1, 1)
    return {"position_ids": positions.unsqueeze(0),
            "attention_mask": {"full_attention": allowed.view(1, 1, rows, past + rows), "linear_attention": None}}


def _check(problem: WorkloadProblem, shape: hm.HybridShape, weights: dict, tokens: torch.Tensor, model,
           decode_tokens: int = 0) -> CheckResult:
    """HF's logits vs ours (same weights) on ``check_tokens`` tokens, against our float64 model: the prefill's,
    or with ``decode_tokens`` the decode step's — the last rows after HF prefilled the others into its cache,
    the path the decode phase times."""
    c = max(decode_tokens + 1, min(problem.seqlen, problem.params["check_tokens"]))
    pos = torch.arange(c, device=problem.device)
    with torch.no_grad():
        if decode_tokens:
            cache = model(tokens[:, :c - decode_tokens], use_cache=True).cache
            got = model(tokens[:, c - decode_tokens:c], cache=cache, use_cache=True,
                        **decode_inputs(c - decode_tokens, decode_tokens, problem.device)).logits
        else:
            got = model(tokens[:, :c]).logits
        ref_dtype = hp.reference_dtype(problem, shape)
        refs = hp.reference_attends(problem, shape)
        exact = hm.logits(hm.cast(weights, ref_dtype), hm.forward(hm.cast(weights, ref_dtype), shape, tokens[:, :c], pos, refs))
        ours = hm.logits(weights, hm.forward(weights, shape, tokens[:, :c], pos, hp.attends(problem, shape, c, "fwd")))
    rows = slice(c - decode_tokens, c) if decode_tokens else slice(0, c)
    return check_against_eager({"logits": got}, {"logits": exact[:, rows]}, {"logits": ours[:, rows]})


def hf_flops(problem: WorkloadProblem, shape: hm.HybridShape, phase: str, length: int, rows: int) -> float:
    """The matmul FLOPs HF's MiniMax executes for ``rows`` new tokens over ``length`` keys (what
    torch.utils.flop_counter counts of it): our model's dense layers and LM head (the one expert's MLP is ours),
    its router, its softmax layers' score rectangle (sdpa or eager), and its lightning layers by its own
    algorithms — chunks of :data:`BLOCK_SIZE` in prefill (the lightning method's forward at that block), the
    recurrence in decode (``4 d^2`` per row and head, the method's decode convention)."""
    b = problem.batch
    total = shape.dense_flops(b * rows) + shape.head_flops(b * (1 if phase == "prefill" else rows))
    total += 2.0 * b * rows * shape.hidden * EXPERTS * shape.layers
    lightning = hp.method_of(problem, hm.LIGHTNING)
    for i, kind in enumerate(shape.pattern):
        direction = "fwd" if phase == "prefill" else DECODE
        attn = hp.attention_problem(problem, shape, kind, length, direction, layer=i, decode_tokens=rows)
        if kind == hm.SOFTMAX:
            total += 2 * dense_matmul_flops(attn)  # Q K^T and P V over the whole rectangle
        else:
            total += lightning.flops(replace(attn, options={**attn.options, "block": BLOCK_SIZE}), direction)
    return total


def build(problem: WorkloadProblem) -> WorkloadStep:
    shape, weights, tokens = hp.setup(problem)
    model = hf_model(shape, weights, problem.dtype, problem.device)
    s, b = problem.seqlen, problem.batch
    fields = {**hp.fields(problem, shape), "hf_attn_implementation": model.config._attn_implementation,
              "hf_experts_implementation": model.config._experts_implementation}
    kernel = f"transformers MiniMax (attn_implementation={model.config._attn_implementation})"
    if problem.phase == "prefill":
        def call():
            with torch.no_grad():
                return model(tokens[:, :s], use_cache=True, logits_to_keep=1).logits

        flops = hf_flops(problem, shape, "prefill", s, s)
        return WorkloadStep(call=call, flops=flops, check=lambda: _check(problem, shape, weights, tokens, model),
                            metrics=lambda sec: {"tokens_per_s": b * s / sec, "ms": sec * 1e3}, fields=fields,
                            inputs=(tokens,), kernel=kernel)
    n = problem.run.decode_tokens
    with torch.no_grad():
        prefilled = model(tokens[:, :s - n], use_cache=True).cache
    new = tokens[:, s - n:s]
    positions = decode_inputs(s - n, n, problem.device)
    copy_s: list[float] = []

    def call():
        started = time.perf_counter()
        cache = copy.deepcopy(prefilled)
        copy_s.append(time.perf_counter() - started)
        with torch.no_grad():
            return model(new, cache=cache, use_cache=True, **positions).logits

    def metrics(sec: float) -> dict:
        copied = sorted(copy_s)[len(copy_s) // 2] if copy_s else 0.0
        return {"ms_per_token": sec * 1e3 / n, "tokens_per_s": b * n / sec, "cache_copy_ms": copied * 1e3}

    flops = hf_flops(problem, shape, DECODE, s, n)
    return WorkloadStep(call=call, flops=flops, check=lambda: _check(problem, shape, weights, tokens, model, n),
                        metrics=metrics, fields=fields, inputs=(tokens,), kernel=kernel)


WORKLOAD = Workload(
    name="hybrid_lm_hf",
    summary="peer of hybrid_lm: Hugging Face transformers' MiniMaxForCausalLM with the same weights (prefill, decode)",
    phases=("prefill", DECODE),
    params=PARAMS,
    flavors=FLAVORS,
    build=build,
    specs=hp.SPECS,
    constraints=hp.constraints,
    metrics=hp.METRICS + (Metric("cache_copy_ms", "ms", "lower",
                                                  "part of a decode step spent copying HF's prefilled cache"),),
    flop_convention="what HF's MiniMax executes (hf_flops): our dense layers and LM head, its router, softmax layers' "
                    "score rectangle 4*rows*keys*d per head, lightning in chunks of 256 (prefill) or by the "
                    "recurrence 4*d^2 per row and head (decode); norms, RoPE, gates not counted",
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    limits=limits,
    probe=probe,
    homepage="https://huggingface.co/docs/transformers/model_doc/minimax",
)
