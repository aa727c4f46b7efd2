"""Every built-in attention kernel, one file each. Third-party kernels use the ``lcbench.methods`` entry point."""

from methods import blocksparse, naive, sdpa

BUILTIN = [
    naive.METHOD,
    sdpa.METHOD,
    blocksparse.METHOD,
]
