"""The names a plugin written against lcbench 0.1.0 imports (README, "Adding a method"): kept importable.

New code imports the interfaces from :mod:`harness.interfaces` and the registries from :mod:`harness.catalog`.
"""

from harness.catalog import collect, get_method, methods, plugin_modules
from harness.interfaces.method import AttentionFn, Method, Problem, softmax_forward_flops, torch_dtype

__all__ = ["AttentionFn", "Method", "Problem", "collect", "get_method", "methods", "plugin_modules",
           "softmax_forward_flops", "torch_dtype"]
