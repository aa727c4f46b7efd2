"""What a plugin implements — methods, strategies, workloads — and what it is given (Problem, CPContext,
Comm, the float64 references). Nothing here imports a plugin package: the catalog (:mod:`harness.catalog`)
collects them."""

from harness.interfaces.comm import Comm
from harness.interfaces.local_kernel import LocalKernel, local_attention, merge_into
from harness.interfaces.method import AttentionFn, Method, Problem, softmax_flops, softmax_forward_flops, torch_dtype
from harness.interfaces.params import Param, ParamError
from harness.interfaces.reference import reference_attention, reference_outputs
from harness.interfaces.strategy import COMMON_OPTIONS, CPContext, CPProblem, Strategy, Unavailable, Unsupported
from harness.interfaces.workload import CheckResult, Metric, Workload, WorkloadProblem, WorkloadStep, check_against_eager

__all__ = [
    "AttentionFn", "COMMON_OPTIONS", "CPContext", "CPProblem", "CheckResult", "Comm", "LocalKernel", "Method",
    "Metric", "Param", "ParamError", "Problem", "Strategy", "Unavailable", "Unsupported", "Workload", "WorkloadProblem",
    "WorkloadStep",
    "local_attention", "merge_into", "reference_attention", "reference_outputs", "softmax_flops",
    "softmax_forward_flops", "torch_dtype",
]
