"""Attention masks: one type (:class:`Mask`), a registry of named patterns, real document packs."""

from harness.masks.core import ALL_FEATURES, ARBITRARY, CAUSAL, PER_HEAD, VARLEN, WINDOW, Mask, RowIntervals, Varlen
from harness.masks.registry import MASKS, MaskPattern, build_mask, get_mask_pattern, register_mask
from harness.masks import patterns  # noqa: F401  (registers the built-in patterns)

__all__ = [
    "ALL_FEATURES", "ARBITRARY", "CAUSAL", "PER_HEAD", "VARLEN", "WINDOW",
    "Mask", "RowIntervals", "Varlen", "MASKS", "MaskPattern", "build_mask", "get_mask_pattern", "register_mask",
]
