"""``lcbench predict``: a context-parallel suite's runs predicted on a cluster profile, stored as predicted records.

For every run: the strategy's support check (the same one a measured run passes: an unsupported combination
is stored ``unsupported`` with its reason), its declared :class:`~harness.interfaces.schedule.Schedule` on the
real mask sharded by its own layout, walked by :class:`~harness.prediction.model.Walker` with the cluster's
kernel rates and link tiers. The record has the fields of a measured CP record (rank-max time, TFLOP/s per
device under the local method's FLOP convention, per-rank times, bytes, area and time imbalance, peak memory)
plus the split a measurement cannot give (compute, communication, exposed communication per rank; bytes per
tier). It is marked as what it is: status ``predicted``, ``source: predicted``, the cluster, its version and
the model's version — all part of its key, so it never replaces (or passes for) a measured record of the
same run; ``run_key`` is the measured run's key, which ``compare`` matches on.

Everything a prediction needs is checked before the first run: every strategy declares a schedule, the
cluster has a rate table for the local method in each dtype and direction, world sizes fit the cluster.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from harness import status as st
from harness.catalog import get_method, get_strategy, local_kernels, methods
from harness.errors import UserError
from harness.interfaces import CPProblem, Problem, torch_dtype
from harness.masks import build_mask
from harness.interfaces.local_kernel import LocalKernel
from harness.interfaces.schedule import Placement
from harness.prediction.cluster import Cluster
from harness.prediction.model import MODEL_VERSION, Walker
from harness.run import DECODE, Run

SOURCE = "predicted"




def predicted_key(run: Run, cluster: Cluster) -> str:
    blob = json.dumps([run.key, cluster.name, cluster.version(), MODEL_VERSION])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def check_predictable(runs: list[Run], cluster: Cluster) -> None:
    """Every mistake that would make a prediction impossible, as one line, before anything is predicted."""
    if not runs:
        raise UserError("nothing to predict: the suite has no runs")
    not_cp = sorted({r.kind for r in runs if r.kind != "strategy"})
    if not_cp:
        raise UserError(f"lcbench predict takes context-parallel suites (strategies); this suite also has "
                        f"{', '.join(not_cp)} runs")
    from harness.catalog import strategies

    without = sorted({r.strategy for r in runs if get_strategy(r.strategy).schedule is None})
    if without:
        have = sorted(n for n, s in strategies().items() if s.schedule is not None)
        raise UserError(f"strategy {', '.join(without)} declares no schedule, so it cannot be predicted "
                        f"(predictable: {', '.join(have)})")
    too_big = sorted({r.world_size for r in runs if r.world_size > cluster.profile.max_world_size})
    if too_big:
        raise UserError(f"world size {too_big[0]} exceeds cluster {cluster.name}'s "
                        f"{cluster.profile.devices_per_node} x {cluster.profile.max_nodes} devices")
    for method, dtype, direction in sorted({(r.method, r.dtype, r.direction) for r in runs}):
        if direction == DECODE:
            continue
        why = cluster.rates_for(method).supports(dtype, direction)
        if why:
            raise UserError(f"cluster {cluster.name}: {why}")


@dataclass
class Predictor:
    cluster: Cluster
    _masks: dict = field(default_factory=dict)  # the one mask in use: a sweep is predicted mask by mask

    def mask(self, run: Run):
        key = (run.mask, run.seqlen, run.heads_q, run.mask_params)
        if key not in self._masks:
            self._masks.clear()  # an 8M-token mask is ~200 MB: hold one
            self._masks[key] = build_mask(run.mask, run.seqlen, run.heads_q, **run.mask_kwargs)
        return self._masks[key]

    def record(self, run: Run) -> dict:
        record = st.base_record(run)
        record.update(kind=run.kind, key=predicted_key(run, self.cluster), run_key=run.key, source=SOURCE,
                      cluster=self.cluster.name, cluster_version=self.cluster.version(), model_version=MODEL_VERSION,
                      device_model=self.cluster.profile.device.name)
        started = time.perf_counter()
        try:
            self._predict(run, record)
        except UserError as e:
            st.set_status(record, st.ERROR, str(e))
        record["wall_s"] = time.perf_counter() - started
        return record

    def _predict(self, run: Run, record: dict) -> None:
        if run.direction == DECODE:
            st.set_status(record, st.UNSUPPORTED, "decode (context-parallel strategies run fwd, bwd and fwd+bwd)")
            return
        strategy, method = get_strategy(run.strategy), get_method(run.method)
        mask = self.mask(run)
        problem = strategy.laid_out(replace(CPProblem.of(run, mask, torch.device("cpu"), methods()),
                                            local_kernels=modelled_kernels(run.method)))  # the kernel: a rate table
        why = method_reason(run, mask) or strategy.unsupported_reason(problem)
        if why:
            st.set_status(record, st.UNSUPPORTED, why)
            return
        profile = self.cluster.profile
        schedule = strategy.schedule(problem, Placement(run.world_size, profile.devices_per_node))
        walker = Walker(profile, self.cluster.rates_for(run.method), run.dtype, run.mask, run.head_dim,
                        run.world_size)
        times = walker.walk(schedule)
        global_problem = whole_problem(run, mask, problem.device)
        flops = method.flops(global_problem, run.direction)
        wall = times.wall_ms
        areas = schedule.areas() if run.direction != "fwd+bwd" else schedule.areas() // 2
        model = strategy.comm_model(problem, run.direction) if strategy.comm_model else None
        record.update(
            time_ms_median=float(wall.max()), time_ms_p20=None, time_ms_p80=None, samples=0,
            cpu_ms=float(times.busy_ms.max()), flops=flops, area=global_problem.area,
            tflops=flops / (wall.max() / 1e3 * run.world_size) / 1e12 if wall.max() > 0 else 0.0,
            flop_convention=method.flop_convention,
            kernel=f"{method.name} (rate table: {self.cluster.rates_for(run.method).source})",
            rank_time_ms=_json(wall), rank_cpu_ms=_json(times.busy_ms),
            rank_compute_ms=_json(times.compute_ms), rank_comm_ms=_json(times.comm_ms),
            rank_exposed_comm_ms=_json(times.exposed_comm_ms),
            compute_ms=float(times.compute_ms.max()), exposed_comm_ms=float(times.exposed_comm_ms.max()),
            time_imbalance=float(wall.max() / wall.mean()) if wall.mean() > 0 else None,
            rank_area=json.dumps([int(a) for a in areas]),
            area_imbalance=float(areas.max() / areas.mean()) if areas.mean() > 0 else None,
            comm_bytes=json.dumps([int(b) for b in schedule.sent_bytes()]),
            comm_bytes_model=json.dumps(model) if model is not None else None,
            bytes_by_tier=json.dumps({k: int(v.max()) for k, v in times.bytes_by_tier.items()}),
            peak_mem_bytes=int(schedule.peak_bytes.max()),
            rank_peak_mem_bytes=json.dumps([int(b) for b in schedule.peak_bytes]),
            cp_info=json.dumps(schedule.info), mask_info=json.dumps(mask.describe()),
            padded_seqlen=problem.seqlen if problem.padding else None,
            sharing=walker.sharing,
        )
        st.set_status(record, st.PREDICTED, None)


def _modelled(*_args, **_kwargs):
    raise RuntimeError("a modelled local kernel is a rate table: it is predicted, never called")


def modelled_kernels(method: str) -> dict[str, LocalKernel]:
    """The local kernels a prediction may use: every method's own, plus ``method`` itself where it has none.

    A GPU library (flash_attn2, cudnn_sdpa) has no local kernel in lcbench (it runs on CUDA only, and its
    per-block call with log-sum-exp is not wrapped), yet ring-flash-attention and TransformerEngine run
    exactly it per ring step; its rate table is the model of that call, so a prediction stands it in. The
    method's own limits still apply (:func:`method_reason`)."""
    kernels = dict(local_kernels())
    if method not in kernels and get_method(method).local_kernel is None:
        kernels[method] = LocalKernel(f"{method} (modelled by its rate table)", _modelled, _modelled, _modelled,
                                      _modelled)
    return kernels


def whole_problem(run: Run, mask, device: torch.device) -> Problem:
    """The run's single-device problem on ``mask`` (the predictor's one held mask, not a second copy)."""
    return Problem(mask=mask, batch=run.batch, seqlen=run.seqlen, heads_q=run.heads_q, heads_kv=run.heads_kv,
                   head_dim=run.head_dim, dtype=torch_dtype(run.dtype), device=device, options=run.option_kwargs,
                   direction=run.direction)


def method_reason(run: Run, mask) -> Optional[str]:
    """Why the local method itself cannot compute the run's attention (its mask features, dtypes, shapes);
    None when it can. The device is the cluster's, so it is checked on one the method runs on."""
    method = get_method(run.method)
    why = method.unsupported_reason(whole_problem(run, mask, torch.device(sorted(method.devices)[0])), run.direction)
    return f"local method {run.method}: {why}" if why else None


def _json(values: np.ndarray) -> str:
    return json.dumps([round(float(v), 4) for v in values])


def predict_runs(runs: list[Run], cluster: Cluster, done: set[str] = frozenset(),
                 progress: Optional[Callable[[int, int, dict], None]] = None) -> Iterator[dict]:
    """Records of every run not yet in ``done`` (predicted keys), in order."""
    predictor = Predictor(cluster)
    todo = [r for r in runs if predicted_key(r, cluster) not in done]
    todo.sort(key=lambda r: (r.mask, r.mask_params, r.seqlen, r.heads_q))  # each mask built once
    for i, run in enumerate(todo):
        record = predictor.record(run)
        if progress is not None:
            progress(i + 1, len(todo), record)
        yield record
