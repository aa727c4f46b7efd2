"""Third-party warnings that say nothing to an lcbench user, silenced where they are raised — and listed.

Each entry names the module that warns, the message, and why it does not concern the user (what lcbench
already reports instead). The filters match only those modules and messages: any other warning, from these
libraries or elsewhere, still shows. :func:`silence` installs them (the CLI and the plugin catalog call it, so
benchmark processes are as quiet as the driver); ``lcbench list warnings`` and every session's machine info
(``silenced_warnings``) say what is silenced.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class Silenced:
    """One silenced warning: ``module``, a regular expression matched against the start of the warning's module
    name (as :func:`warnings.filterwarnings` does), and ``message``, the start of its text, as written."""

    module: str
    message: str
    category: type[Warning]
    why: str


SILENCED: tuple[Silenced, ...] = (
    Silenced(r"fla(\.|$)", "Triton is not supported on current platform, roll back to CPU.",
             UserWarning,
             "flash-linear-attention on a machine without a Triton GPU backend: its Triton kernels are reported "
             "unavailable by their probes (lcbench list methods), its pure-torch references run on the CPU"),
)


def silence() -> None:
    """Install a filter for every entry of :data:`SILENCED` (idempotent: an installed filter is not repeated)."""
    for entry in SILENCED:
        warnings.filterwarnings("ignore", message=re.escape(entry.message), category=entry.category,
                                module=entry.module)


def describe() -> list[dict]:
    """The silenced warnings as plain data (for machine info and ``lcbench list warnings``)."""
    return [{"module": e.module, "message": e.message, "category": e.category.__name__, "why": e.why}
            for e in SILENCED]
