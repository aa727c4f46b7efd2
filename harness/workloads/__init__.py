"""Every built-in model-level workload, one file each; shared model blocks in :mod:`harness.workloads.blocks`.
Third-party workloads use the ``lcbench.workloads`` entry point (or ``LCBENCH_PLUGINS`` modules' ``WORKLOADS``)."""

from harness.workloads import attention_layer, power_reach

BUILTIN = [
    attention_layer.WORKLOAD,
    power_reach.WORKLOAD,
]
