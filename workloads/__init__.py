"""Every built-in model-level workload, one file each; the model library they share in :mod:`workloads.models`.
Third-party workloads use the ``lcbench.workloads`` entry point (or ``LCBENCH_PLUGINS`` modules' ``WORKLOADS``)."""

from workloads import attention_layer, power_reach
from workloads import qttt, score_dilution
from workloads import hybrid_lm, hybrid_lm_hf

BUILTIN = [
    attention_layer.WORKLOAD,
    power_reach.WORKLOAD,
    qttt.WORKLOAD,
    hybrid_lm.WORKLOAD,
    hybrid_lm_hf.WORKLOAD,
    score_dilution.WORKLOAD,
]
