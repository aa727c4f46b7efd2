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
from typing import Optional

import torch

from harness.interfaces import CheckResult, Metric, Workload, WorkloadProblem, WorkloadStep, check_against_eager
from harness.spec import DECODE
from workloads.models import hybrid_problem as hp
from workloads.models import hybrid as hm

LAYER_TYPES = {hm.LIGHTNING: "linear_attention", hm.SOFTMAX: "full_attention"}
# hybrid_lm's flavors with RoPE on the whole head (HF's MiniMax has no partial rotary): run hybrid_lm with
# the same rope_dim to compare like with like.
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
        num_local_experts=1, num_experts_per_tok=1, layer_types=[LAYER_TYPES[k] for k in shape.pattern],
        block_size=256, rope_parameters={"rope_type": "default", "rope_theta": shape.rope_base},
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


def _check(problem: WorkloadProblem, shape: hm.HybridShape, weights: dict, tokens: torch.Tensor, model) -> CheckResult:
    """HF's logits vs ours (same weights) on ``check_tokens`` tokens, against our float64 model."""
    c = max(2, min(problem.seqlen, problem.params["check_tokens"]))
    pos = torch.arange(c, device=problem.device)
    with torch.no_grad():
        got = model(tokens[:, :c]).logits
        ref_dtype = hp.reference_dtype(problem, shape)
        refs = hp.reference_attends(problem, shape)
        exact = hm.logits(hm.cast(weights, ref_dtype), hm.forward(hm.cast(weights, ref_dtype), shape, tokens[:, :c], pos, refs))
        ours = hm.logits(weights, hm.forward(weights, shape, tokens[:, :c], pos, hp.attends(problem, shape, c, "fwd")))
    return check_against_eager({"logits": got}, {"logits": exact}, {"logits": ours})


def build(problem: WorkloadProblem) -> WorkloadStep:
    shape, weights, tokens = hp.setup(problem)
    model = hf_model(shape, weights, problem.dtype, problem.device)
    s, b = problem.seqlen, problem.batch
    fields = {**hp.fields(problem, shape), "hf_attn_implementation": model.config._attn_implementation,
              "hf_experts_implementation": model.config._experts_implementation}
    if problem.phase == "prefill":
        def call():
            with torch.no_grad():
                return model(tokens[:, :s], use_cache=True, logits_to_keep=1).logits

        flops = shape.dense_flops(b * s) + shape.head_flops(b) + hp.attention_flops(problem, shape, "fwd", s)
        return WorkloadStep(call=call, flops=flops, check=lambda: _check(problem, shape, weights, tokens, model),
                            metrics=lambda sec: {"tokens_per_s": b * s / sec, "ms": sec * 1e3}, fields=fields,
                            inputs=(tokens,))
    n = problem.run.decode_tokens
    with torch.no_grad():
        prefilled = model(tokens[:, :s - n], use_cache=True).cache
    new = tokens[:, s - n:s]
    copy_s: list[float] = []

    def call():
        started = time.perf_counter()
        cache = copy.deepcopy(prefilled)
        copy_s.append(time.perf_counter() - started)
        with torch.no_grad():
            return model(new, cache=cache, use_cache=True).logits

    def metrics(sec: float) -> dict:
        copied = sorted(copy_s)[len(copy_s) // 2] if copy_s else 0.0
        return {"ms_per_token": sec * 1e3 / n, "tokens_per_s": b * n / sec, "cache_copy_ms": copied * 1e3}

    flops = shape.dense_flops(b * n) + shape.head_flops(b * n) + hp.attention_flops(problem, shape, DECODE, s, n)
    return WorkloadStep(call=call, flops=flops, check=lambda: _check(problem, shape, weights, tokens, model),
                        metrics=metrics, fields=fields, inputs=(tokens,))


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
    flop_convention=hp.FLOP_CONVENTION,
    dtypes=frozenset({"float32", "bfloat16", "float64"}),
    limits=limits,
    probe=probe,
    homepage="https://huggingface.co/docs/transformers/model_doc/minimax",
)
