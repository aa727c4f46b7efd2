"""A third-party method written against lcbench 0.1.0's README ("Adding a method"), unchanged: it imports
``Method`` and ``Problem`` from ``harness.registry`` and is loaded through ``LCBENCH_PLUGINS``."""

import torch.nn.functional as F

from harness.registry import Method, Problem


def build(problem: Problem):
    allowed = problem.mask.dense().to(problem.device)  # [Hm, S, S]
    group = problem.heads_q // problem.heads_kv

    def attention(q, k, v):
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=problem.scale)
        return out.transpose(1, 2)

    return attention


METHODS = [Method(name="legacy_dense_sdpa", summary="a 0.1.0-style plugin: SDPA with the dense mask", build=build,
                  mask_features=frozenset({"causal", "window", "varlen", "arbitrary"}))]
