"""Multi-GPU placement of a rank group on a simulated Ray cluster (2 nodes x 2 declared GPUs), without NCCL.

``RankGroup.place`` reserves the bundles and starts the rank actors for real; the environment each rank's
benchmark process would get (``CUDA_VISIBLE_DEVICES``, device index) is computed from the actors' own
``describe()`` by :func:`harness.cluster.rank_group.device_env`, exactly as ``build`` does before it starts
the process group. No process group is started: there are no GPUs here.
"""

from __future__ import annotations

import pytest

from harness.cluster.rank_group import GroupError, GroupSpec, device_env

NODES, GPUS_PER_NODE, CPUS_PER_NODE = 2, 2, 2


def test_device_env_per_node() -> None:
    """Two nodes sharing one IP (as simulated nodes do) are kept apart by node id; GPU ids sort numerically."""
    info = [
        {"node": "a", "ip": "10.0.0.1", "host": "h", "pid": 1, "gpus": ["10"]},
        {"node": "a", "ip": "10.0.0.1", "host": "h", "pid": 2, "gpus": ["9"]},
        {"node": "b", "ip": "10.0.0.1", "host": "h", "pid": 3, "gpus": ["0"]},
    ]
    envs, devices = device_env(info)
    assert envs == [{"CUDA_VISIBLE_DEVICES": "9,10"}, {"CUDA_VISIBLE_DEVICES": "9,10"}, {"CUDA_VISIBLE_DEVICES": "0"}]
    assert devices == [1, 0, 0]
    with pytest.raises(GroupError, match="no GPU"):
        device_env([{"node": "a", "ip": "x", "host": "h", "pid": 1, "gpus": []}])


def test_gpu_spec_uses_nccl_and_one_gpu_per_rank() -> None:
    spec = GroupSpec(world_size=4, device="cuda", cpus_per_rank=0.5, threads=1)
    assert spec.backend == "nccl" and spec.bundle() == {"CPU": 0.5, "GPU": 1}
    assert GroupSpec(world_size=4, device="cpu", cpus_per_rank=0.5, threads=1).backend == "gloo"


@pytest.fixture(scope="module")
def simulated_cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": CPUS_PER_NODE, "num_gpus": GPUS_PER_NODE})
    for _ in range(NODES - 1):
        cluster.add_node(num_cpus=CPUS_PER_NODE, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_world_of_four_packs_two_ranks_per_node(simulated_cluster) -> None:
    from harness.cluster.rank_group import RankGroup

    world = NODES * GPUS_PER_NODE
    spec = GroupSpec(world_size=world, device="cuda", cpus_per_rank=CPUS_PER_NODE / GPUS_PER_NODE, threads=1,
                     group_timeout_s=120.0)
    group = RankGroup(spec)
    try:
        group.place()
        info = group.info
        envs, devices = group._device_env()
    finally:
        group.teardown()
    assert spec.backend == "nccl"
    assert len(info) == world and all(len(i["gpus"]) == 1 for i in info)
    nodes = [i["node"] for i in info]
    assert len(set(nodes)) == NODES
    # packed: each node holds GPUS_PER_NODE ranks (one per GPU), no GPU given to two ranks of a node
    for node in set(nodes):
        on_node = [r for r in range(world) if nodes[r] == node]
        assert len(on_node) == GPUS_PER_NODE and on_node == list(range(on_node[0], on_node[0] + GPUS_PER_NODE))
        gpus = [info[r]["gpus"][0] for r in on_node]
        assert len(set(gpus)) == GPUS_PER_NODE
        visible = ",".join(sorted(gpus, key=lambda g: (len(g), g)))
        for r in on_node:
            assert envs[r] == {"CUDA_VISIBLE_DEVICES": visible}  # every GPU of the group on this node
            assert visible.split(",")[devices[r]] == info[r]["gpus"][0]  # set_device picks its own
        assert sorted(devices[r] for r in on_node) == list(range(GPUS_PER_NODE))


@pytest.mark.parametrize("group", ["harness.cluster.rank_group:RankGroup", "harness.cluster.local_group:LocalRankGroup"])
def test_both_rank_groups_have_the_declared_shape(group):
    """Ray's and the local rank group are one interface (``RankGroupSupervisor``): the same steps, the same
    positional parameters of ``run``, their own knobs keyword-only."""
    import importlib
    import inspect

    from harness.cluster.group_run import RankGroupSupervisor

    module, name = group.split(":")
    cls = getattr(importlib.import_module(module), name)
    for step in ("build", "run", "teardown"):
        assert callable(getattr(cls, step, None)), (name, step)

    def positional(fn):
        return [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    assert positional(cls.run) == positional(RankGroupSupervisor.run)
