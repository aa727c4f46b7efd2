"""Every built-in mask pattern: importing this package registers them all."""

from harness.masks.patterns import dense, documents, heads, neighborhood, sparse, streaming  # noqa: F401
