"""The registry of mask patterns: every named pattern a suite or the CLI may ask for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness.errors import UserError, same_kind, unknown, wrong_kind
from harness.masks.core import Mask

Builder = Callable[..., Mask]


@dataclass(frozen=True)
class MaskPattern:
    """A named pattern: ``builder(seqlen, num_heads, **params) -> Mask`` with defaults for every parameter."""

    name: str
    summary: str
    builder: Builder
    defaults: dict[str, Any]
    examples: tuple[dict, ...] = ({},)  # parameter sets that are meaningful at small test lengths (~1K)

    def build(self, seqlen: int, num_heads: int = 1, **params: Any) -> Mask:
        for key, value in params.items():
            if key not in self.defaults:
                raise unknown(f"parameter of mask {self.name!r}", key, self.defaults)
            default = self.defaults[key]
            if default is not None and not same_kind(default, value):
                raise wrong_kind(f"mask {self.name}", key, value, default)
        if not isinstance(seqlen, int) or seqlen <= 0:
            raise UserError(f"mask {self.name}: seqlen={seqlen!r}; expected an integer > 0")
        merged = {**self.defaults, **params}
        mask = self.builder(seqlen, num_heads, **merged)
        mask.params = merged
        return mask


MASKS: dict[str, MaskPattern] = {}


def register_mask(
    name: str, summary: str, examples: tuple[dict, ...] = ({},), **defaults: Any
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder`` under ``name`` with its parameter defaults.

    ``examples`` are parameter sets that exercise the pattern at small lengths (the correctness gate and
    the property tests use them); the defaults are the field's values at real lengths.
    """

    def wrap(builder: Builder) -> Builder:
        if name in MASKS:
            raise ValueError(f"mask pattern {name!r} registered twice")
        MASKS[name] = MaskPattern(name, summary, builder, dict(defaults), tuple(examples))
        return builder

    return wrap


def get_mask_pattern(name: str) -> MaskPattern:
    if name not in MASKS:
        raise unknown("mask", name, MASKS)
    return MASKS[name]


def build_mask(name: str, seqlen: int, num_heads: int = 1, **params: Any) -> Mask:
    return get_mask_pattern(name).build(seqlen, num_heads, **params)


def require(ok: bool, mask: str, param: str, value: Any, allowed: str) -> None:
    """Raise the one-line error for an impossible mask parameter."""
    if not ok:
        raise UserError(f"mask {mask}: {param}={value!r} is not allowed; {allowed}")
