"""Every built-in attention kernel, one file each. Third-party kernels use the ``lcbench.methods`` entry point."""

from methods import blocksparse, naive, sdpa
from methods import cudnn_sdpa, flash_attn2, flash_attn3, flashinfer, flex, flex_cuda, magi_ffa, natten, xformers

BUILTIN = [
    naive.METHOD,
    sdpa.METHOD,
    blocksparse.METHOD,
    flex.METHOD,
    flash_attn2.METHOD,
    flash_attn3.METHOD,
    cudnn_sdpa.METHOD,
    flex_cuda.METHOD,
    xformers.METHOD,
    flashinfer.METHOD,
    magi_ffa.METHOD,
    natten.METHOD,
]
