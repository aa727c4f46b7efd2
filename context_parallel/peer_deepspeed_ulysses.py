"""deepspeed_ulysses: DeepSpeed-Ulysses as DeepSpeed ships it, beside our ``ulysses``.

What runs: ``deepspeed.sequence.layer.DistributedAttention(local_attention, group, scatter_idx=2,
gather_idx=1, num_kv_heads=H_kv)`` called on ``[B, S/W, H, d]`` shards with ``batch_dim_idx=0``: DeepSpeed's
own three all-to-alls (q, k, v: sequence -> heads), the local attention on the full sequence of H/W heads,
and its all-to-all back (heads -> sequence); the backward is DeepSpeed's (``_SeqAllToAll.backward``).
The local attention is OUR local kernel of ``Run.method`` (``ctx.kernel``, e.g. blocksparse) with a plan on
global positions — the same kernel our ``ulysses`` runs locally — so the two differ only in how they
communicate and lay out memory.

Runs on CPU with gloo, unmodified: DeepSpeed's collectives go through ``deepspeed.comm`` (its
``TorchBackend``) to ``torch.distributed.all_to_all_single``, which gloo implements in torch 2.13 (checked:
output and dq/dk/dv match the float64 reference at world sizes 2 and 4, tests/test_cp_peers.py).

One-time cost kept out of the timed region: ``deepspeed.comm`` must be initialised (``init_distributed``) on
top of the existing process group, and on a CPU accelerator creating its ``TorchBackend`` JIT-compiles the
``deepspeed_shm_comm`` C++ op (DeepSpeed's shared-memory all-reduce, not used by the all-to-all; ~25 s on
this machine, once). It is compiled with torch's cpp_extension into ``TORCH_EXTENSIONS_DIR``, which this
module points at a persistent build cache (``$LCBENCH_BUILD_DIR`` or ``~/.cache/lcbench/torch_extensions``)
unless the user set it; :func:`prebuild` compiles it in the launching process so that ranks only load it.
Both happen in ``prepare`` / before launch, never inside a timed call, under lcbench's build lock
(:func:`harness.build_lock.with_torch_build_locks`): a lock left by a killed build is taken over, and one a
live build holds past the bounded wait makes the peer ``unavailable`` with that reason instead of a hang.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from context_parallel import layouts
from harness.build_lock import BuildLockBusy, with_torch_build_locks
from harness.interfaces.strategy import CPContext, CPProblem, Strategy, Unavailable
from context_parallel.peer_support import counted, missing_package, ulysses_limits, ulysses_local_kernel
from context_parallel.volumes import a2a_ring_bytes


def build_dir() -> Path:
    """Where DeepSpeed's JIT-compiled ops are cached (persistent across runs)."""
    root = os.environ.get("LCBENCH_BUILD_DIR") or str(Path.home() / ".cache" / "lcbench")
    return Path(root) / "torch_extensions"


def use_build_cache() -> None:
    """Point torch's extension builds at the persistent cache unless the user chose a directory."""
    if not os.environ.get("TORCH_EXTENSIONS_DIR"):
        os.environ["TORCH_EXTENSIONS_DIR"] = str(build_dir())
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # skip DeepSpeed's accelerator auto-detection warning


def prebuild() -> Optional[str]:
    """Compile (or load from the cache) the op DeepSpeed's comm backend builds at init; call before launching.

    Returns None, or why nothing was built (the op does not apply to this accelerator; its build lock is held
    by a live build past the bounded wait).
    """
    use_build_cache()
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None:
        return "no ShareMemCommBuilder for this accelerator"
    try:
        with_torch_build_locks(builder.load)
    except BuildLockBusy as e:
        return f"deepspeed_shm_comm op not built: {e}"
    return None


def ensure_deepspeed_comm() -> None:
    """Initialise ``deepspeed.comm`` on top of the running torch.distributed group (once per process);
    :class:`~harness.interfaces.strategy.Unavailable` if its op's build lock stays held past the wait."""
    use_build_cache()
    import deepspeed
    import deepspeed.comm as ds_comm

    if not ds_comm.is_initialized():
        try:
            with_torch_build_locks(lambda: deepspeed.init_distributed(dist_backend=dist.get_backend(), verbose=False))
        except BuildLockBusy as e:
            raise Unavailable(f"deepspeed_shm_comm op not built: {e}") from None


def probe() -> Optional[str]:
    if missing_package("deepspeed"):
        return "package deepspeed not installed"
    use_build_cache()
    from deepspeed.sequence.layer import DistributedAttention  # noqa: F401 — the API this adapter needs

    return None


def prepare(ctx: CPContext) -> None:
    ensure_deepspeed_comm()
    from deepspeed.sequence.layer import DistributedAttention

    ctx.state["attn"] = DistributedAttention(
        ulysses_local_kernel(ctx),
        dist.group.WORLD,
        scatter_idx=2,  # heads of [B, S, H, d]
        gather_idx=1,  # sequence
        num_kv_heads=ctx.problem.heads_kv,
    )


def attention(ctx: CPContext, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    attn = ctx.state["attn"]
    return counted(ctx.comm, lambda q_, k_, v_: attn(q_, k_, v_, 0), q, k, v)  # batch_dim_idx=0


def comm_model(problem: CPProblem, direction: str) -> list[int]:
    """Same volume as our ulysses without kv repetition: q, k, v and out all-to-alls (bwd: dout, dq, dk, dv)."""
    return a2a_ring_bytes(problem, problem.world_size, [1], 1, direction)


STRATEGY = Strategy(
    name="deepspeed_ulysses",
    summary="peer: DeepSpeed-Ulysses (deepspeed.sequence.layer.DistributedAttention): all-to-all seq->heads, "
    "our local kernel (Run.method) on the full sequence of H/W heads, all-to-all back; contiguous shards",
    layout=layouts.contiguous,
    prepare=prepare,
    attention=attention,
    limits=ulysses_limits,
    comm_model=comm_model,
    probe=probe,
    homepage="https://www.deepspeed.ai/tutorials/ds-sequence/",
)
