"""The model library the workloads compose (not workloads themselves; nothing here is registered).

- :mod:`~workloads.models.attention_block`: seeded projection weights, the attention block (QKV -> a registered
  attention -> output), its float64 / eager twins for the checks, the projections' FLOPs.
- :mod:`~workloads.models.decoder_layers`: RMSNorm, SwiGLU MLP, partial RoPE, the residual wiring of a
  decoder layer, the LM head fused with cross-entropy.
- :mod:`~workloads.models.hybrid`: the MiniMax-style lightning/softmax hybrid LM as plain functions over weights.
- :mod:`~workloads.models.hybrid_problem`: that model as a ``hybrid_lm`` problem sets it up (parameters, shape,
  attention problems, setup, fields, FLOPs), shared by ``hybrid_lm``, its CP phases and ``hybrid_lm_hf``.
- :mod:`~workloads.models.hybrid_cp`: the hybrid model's train step and prefill over a context-parallel group.
- :mod:`~workloads.models.hf_attention` / :mod:`~workloads.models.qwen3`: Hugging Face models whose attention
  runs through lcbench's methods, and the random-initialised Qwen3 that ``qttt`` trains.
"""
