"""Methods a test registers through ``LCBENCH_PLUGINS=tests.plugin_methods`` (an importable module, so that
ranks in other processes load them too): blocksparse with its own FLOP model, and blocksparse judged by a
float64 reference that disagrees with it."""

from harness.catalog import get_method
from harness.interfaces import Method

_bs = get_method("blocksparse")


def _halved_reference(*args, **kw):
    return {k: v * 0.5 for k, v in _bs.reference(*args, **kw).items()}


METHODS = [
    Method(name="bs_own_flops", summary="blocksparse with its own FLOP count", build=_bs.build,
           mask_features=_bs.mask_features, local_kernel=_bs.local_kernel,
           flops=lambda p, d: 1e6 * len(d) * p.heads_q, flop_convention="test: 1e6 * len(direction) * Hq"),
    Method(name="bs_other_reference", summary="blocksparse, judged by another reference", build=_bs.build,
           mask_features=_bs.mask_features, local_kernel=_bs.local_kernel, reference=_halved_reference),
]
