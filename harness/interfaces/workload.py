"""The workload interface: a whole-model phase (a training step, a prefill, a decode step, a TTT loop).

A workload is one file that defines ``WORKLOAD = Workload(...)``: its named parameters with defaults, named
flavors (presets of those parameters: ``tiny`` for CPU, the real model's shapes for GPU), its phases and
the metrics it reports (with units). ``build(problem)`` runs OUTSIDE the timed region — it creates weights,
caches and optimizer state — and returns a :class:`WorkloadStep`: the timed call, its FLOPs (the workload's
own FLOP model for that phase), its own correctness check and its metrics.

Workloads use attention methods and context-parallel strategies by name, through ``problem.method(name)``
and ``problem.strategy(name)``; they never import a plugin package. On a rank group ``problem.rank``,
``problem.world_size`` and ``problem.comm`` (the byte-counting communication wrapper) are set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

from harness.errors import same_kind, unknown, wrong_kind
from harness.interfaces.capability import Capabilities
from harness.interfaces.params import Constraints, Lookup, Param, check_params, no_constraints
from harness.interfaces.reference import GRADIENT_FACTOR, OUTPUT_FACTOR, rounding_floor
from harness.run import Run

if TYPE_CHECKING:
    from harness.interfaces.comm import Comm
    from harness.interfaces.method import Method
    from harness.interfaces.strategy import Strategy

FLAVOR = "flavor"  # the parameter that names a preset


@dataclass(frozen=True)
class Metric:
    """A number a workload reports, with its unit and which way is better."""

    name: str
    unit: str
    better: str = "lower"  # "lower" or "higher"
    description: str = ""


@dataclass
class CheckResult:
    """The outcome of a workload's own correctness check (against float64, or its own invariant)."""

    ok: bool
    errors: dict[str, float] = field(default_factory=dict)
    detail: str = ""

    @property
    def reason(self) -> Optional[str]:
        return None if self.ok else f"failed correctness check: {self.detail}"


@dataclass
class WorkloadStep:
    """A built phase: the timed call and everything measured about it.

    ``check`` runs once before timing (outside it); ``metrics`` turns the timing into the workload's own
    metrics (tokens/s, ms per token, ...); ``fields`` are static facts recorded with the run (parameter
    counts, cache bytes modelled and measured, ...), stored under the record's ``facts``. ``kernel`` says
    which attention kernel(s) really ran when the workload's parameters do not (a model library's own
    attention); left empty, the record names the methods (and on a rank group the strategies) the parameters
    name (:meth:`Workload.named_kernels`). ``inputs`` are the tensors alive during the call (for the memory
    accounting)."""

    call: Callable[[], object]
    flops: float
    check: Callable[[], CheckResult]
    metrics: Callable[[float], dict[str, float]]  # median seconds per call -> {metric name: value}
    fields: dict[str, Any] = field(default_factory=dict)
    inputs: tuple = ()
    per_rank: Callable[[], dict] = dict  # on a rank group: this rank's facts (bytes sent, ...), gathered to rank 0
    kernel: str = ""


@dataclass(frozen=True)
class WorkloadProblem:
    """One workload run as the workload sees it when it builds: the run, its resolved parameters, the
    dtype and device, and access to registered methods and strategies by name."""

    run: Run
    params: dict[str, Any]
    dtype: torch.dtype
    device: torch.device
    method: Callable[[str], "Method"]
    strategy: Callable[[str], "Strategy"]
    rank: int = 0
    world_size: int = 1
    comm: Optional["Comm"] = None

    @property
    def phase(self) -> str:
        return self.run.phase or ""

    @property
    def seqlen(self) -> int:
        return self.run.seqlen

    @property
    def batch(self) -> int:
        return self.run.batch


def _no_limits(problem: WorkloadProblem) -> Optional[str]:
    return None


@dataclass(frozen=True)
class Workload(Capabilities):
    """A model-level workload (see the module docstring)."""

    name: str
    summary: str
    phases: tuple[str, ...]
    params: dict[str, Any]  # parameter -> default (``flavor`` among them when the workload has flavors)
    build: Callable[[WorkloadProblem], WorkloadStep]
    # parameter -> the values it takes (harness.interfaces.params); undeclared ones must match their default's type
    specs: dict[str, Param] = field(default_factory=dict)
    constraints: Constraints = no_constraints  # cross-constraints of resolved parameters: [(key, allowed), ...]
    metrics: tuple[Metric, ...] = ()
    flavors: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> parameter overrides
    flop_convention: str = ""  # how ``flops`` is counted (stated in tables)
    dtypes: frozenset[str] = frozenset({"float32", "bfloat16", "float64"})
    devices: frozenset[str] = frozenset({"cpu", "cuda"})
    distributed: bool = False  # runs on a rank group (world size > 1)
    limits: Callable[[WorkloadProblem], Optional[str]] = _no_limits
    probe: Callable[[], Optional[str]] = lambda: None
    homepage: str = ""

    def __hash__(self) -> int:
        return hash(self.name)

    def resolve_params(self, given: dict[str, Any], lookup: Optional[Lookup] = None) -> dict[str, Any]:
        """Defaults, then the named flavor's values, then the run's own: the parameters a build sees.

        Unknown parameters, unknown flavors, wrongly typed values and values the declared :attr:`specs` or
        :attr:`constraints` do not allow are the user's mistake (one line; a :class:`ParamError` for the
        latter). ``lookup`` (the catalog's) resolves parameters that name a method or a strategy."""
        for key in given:
            if key not in self.params:
                raise unknown(f"parameter of workload {self.name!r}", key, self.params)
        resolved = dict(self.params)
        flavor = given.get(FLAVOR, self.params.get(FLAVOR))
        if flavor is not None:
            if flavor not in self.flavors:
                raise unknown(f"flavor of workload {self.name!r}", str(flavor), self.flavors)
            resolved.update(self.flavors[flavor])
        resolved.update(given)
        for key, value in resolved.items():
            default = self.params[key]
            if default is not None and value is not None and not same_kind(default, value):
                raise wrong_kind(f"workload {self.name!r}", key, value, default)
        check_params(f"workload {self.name!r}", resolved, self.specs, self.constraints, lookup)
        return resolved

    def named_kernels(self, params: dict[str, Any], world_size: int) -> str:
        """The methods (and, on a rank group, the strategies) the resolved ``params`` name through declared
        registry parameters, ``+``-joined in declaration order: what a step runs unless it says otherwise."""
        registries = ("method", "strategy") if world_size > 1 else ("method",)
        names = [params[key] for key, spec in self.specs.items()
                 if spec.registry in registries and isinstance(params.get(key), str)]
        return "+".join(dict.fromkeys(names))

    def unsupported_reason(self, problem: WorkloadProblem) -> Optional[str]:
        run = problem.run
        if run.phase not in self.phases:
            return f"phase {run.phase} (phases: {', '.join(self.phases)})"
        why = self.capability_reason(run.dtype, problem.device.type)
        if why:
            return why
        if problem.world_size > 1 and not self.distributed:
            return f"world size {problem.world_size} (runs on one device)"
        return self.limits(problem)


# Throughput metrics most phases report (a workload lists the ones it fills).
STEP_METRICS = (
    Metric("tokens_per_s", "tokens/s", "higher", "tokens processed per second"),
    Metric("ms", "ms", "lower", "time of one step"),
    Metric("ms_per_token", "ms", "lower", "decode time per generated token"),
)


def check_against_eager(got: dict[str, torch.Tensor], exact: dict[str, torch.Tensor],
                        eager: dict[str, torch.Tensor]) -> CheckResult:
    """The field's correctness rule for a workload's tensors: per tensor, the max error of ``got`` against the
    float64 ``exact`` must be at most a small multiple of the max error of an eager implementation in the same
    dtype (``eager``) plus the dtype's rounding floor. Tensors named ``d...`` are gradients
    (:data:`GRADIENT_FACTOR`), the others outputs (:data:`OUTPUT_FACTOR`)."""
    errors, worst = {}, None
    for name, ref in exact.items():
        ref = ref.double()
        factor = GRADIENT_FACTOR if name.startswith("d") else OUTPUT_FACTOR
        err = float((got[name].double() - ref).abs().max())
        eager_err = float((eager[name].double() - ref).abs().max())
        floor = rounding_floor(ref, got[name].dtype)
        errors[name] = err
        errors[f"{name}_eager"] = eager_err
        if not bool(torch.isfinite(got[name]).all()) or err > factor * eager_err + floor:
            ratio = err / max(eager_err, floor, 1e-300)
            worst = worst or f"{name} error {err:.2e} is {ratio:.1f}x the eager error {eager_err:.2e} (limit {factor:g}x)"
    return CheckResult(ok=worst is None, errors=errors, detail=worst or "")
