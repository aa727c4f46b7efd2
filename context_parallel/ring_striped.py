"""Striped attention: ring attention with token t on rank t mod W (balanced at token granularity)."""

from context_parallel import layouts
from context_parallel.family import ring_strategy

STRATEGY = ring_strategy(
    "ring_striped",
    "P2P ring on the striped layout (token t on rank t mod W), Striped Attention",
    layouts.striped,
    homepage="https://arxiv.org/abs/2311.09431",
)
