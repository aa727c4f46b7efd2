"""Every built-in attention kernel, one file each. Third-party kernels use the ``lcbench.methods`` entry point."""

from methods import blocksparse, blocksparse_native, naive, sdpa
from methods import ttt_linear
from methods import fla, lightning
from methods import cudnn_sdpa, flash_attn2, flash_attn3, flashinfer, flex, flex_cuda, magi_ffa, natten, xformers

BUILTIN = [
    naive.METHOD,
    sdpa.METHOD,
    blocksparse.METHOD,
    blocksparse_native.METHOD,
    flex.METHOD,
    flash_attn2.METHOD,
    flash_attn3.METHOD,
    cudnn_sdpa.METHOD,
    flex_cuda.METHOD,
    xformers.METHOD,
    flashinfer.METHOD,
    magi_ffa.METHOD,
    natten.METHOD,
    *ttt_linear.METHODS,
    *lightning.METHODS,  # causal linear attention: lightning (MiniMax decay), lightning_tnl, linear_attn
    *fla.METHODS,  # its peers: flash-linear-attention's CPU references and Triton kernels, lightning-attn
]
