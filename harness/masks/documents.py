"""Packs of documents whose lengths follow real corpus distributions.

The distributions (``harness/masks/data/*.json``, from LongCA-bench, Apache-2.0) are histograms
``"[lo,hi)" -> fraction of documents``. Naive sampling collapses a pack into one giant document, because the
last bin is very wide and holds most tokens. This sampler:

* draws documents by frequency, uniform inside narrow bins and log-uniform inside wide ones;
* cuts every document into chunks of at most ``max_doc_fraction * pack_len`` tokens, all of which enter the
  pool, so each document contributes its tokens (a token-weighted pack, not one dominated by a single draw);
* shuffles the pool with a seeded PCG64 generator (identical packs on every machine) and fills the pack,
  truncating the last document to the room left.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from harness.errors import UserError

BUILTIN_DISTRIBUTIONS = ("pile", "prolong64k", "prolong512k")
_BIN = re.compile(r"^\[\s*(\d+)\s*,\s*(\d+)\s*\)$")


@dataclass(frozen=True)
class LengthHistogram:
    lo: np.ndarray  # int64, inclusive
    hi: np.ndarray  # int64, exclusive
    weight: np.ndarray  # fraction of documents, normalised to 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        bins = rng.choice(len(self.lo), size=n, p=self.weight)
        lo, hi = self.lo[bins].astype(np.float64), self.hi[bins].astype(np.float64)
        u = rng.random(n)
        wide = hi > 4 * np.maximum(lo, 1)
        uniform = lo + u * (hi - lo)
        log_uniform = np.exp(np.log(np.maximum(lo, 1)) + u * (np.log(hi) - np.log(np.maximum(lo, 1))))
        return np.maximum(1, np.floor(np.where(wide, log_uniform, uniform))).astype(np.int64)


def load_distribution(name_or_path: str) -> LengthHistogram:
    """A built-in distribution by name, or a user's JSON ("[lo,hi)": fraction) or CSV (range,count) file."""
    if name_or_path in BUILTIN_DISTRIBUTIONS:
        text = resources.files("harness.masks").joinpath(f"data/{name_or_path}.json").read_text()
        return _from_mapping(json.loads(text), name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise UserError(
            f"distribution: {name_or_path!r} is neither a built-in ({', '.join(BUILTIN_DISTRIBUTIONS)}) nor a file"
        )
    text = path.read_text()
    if not text.strip():
        raise UserError(f"distribution: {path} is empty; expected JSON bins '[0,32)': fraction or CSV rows range,count")
    mapping = _csv_mapping(text, path) if path.suffix.lower() == ".csv" else None
    if mapping is None:
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"distribution: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    return _from_mapping(mapping, str(path))


def _csv_mapping(text: str, path: Path) -> dict[str, float]:
    """CSV rows ``range,count`` (a header line is optional; the range may be quoted or not: ``[0,32),5``)."""
    rows = []
    for r in csv.reader(text.splitlines()):
        if not r or not "".join(r).strip() or r[0].lstrip().startswith("#"):
            continue
        if len(r) >= 3 and _BIN.match(f"{r[0]},{r[1]}".strip()):  # unquoted "[lo,hi)" split at its comma
            r = [f"{r[0]},{r[1]}", *r[2:]]
        rows.append(r)
    if rows and not _BIN.match(rows[0][0].strip()):
        rows = rows[1:]  # header
    mapping = {}
    for r in rows:
        try:
            mapping[r[0].strip()] = float(r[1])
        except (IndexError, ValueError):
            raise UserError(
                f"distribution: row {','.join(r)!r} in {path} is not 'range,count' (e.g. '[0,32),5')"
            ) from None
    return mapping


def _from_mapping(mapping: dict, source: str) -> LengthHistogram:
    if not isinstance(mapping, dict) or not mapping:
        raise UserError(f"distribution: {source} is empty; expected bins like '[0,32)': fraction")
    lo, hi, w = [], [], []
    for key, value in mapping.items():
        m = _BIN.match(str(key).strip())
        if not m or int(m.group(2)) <= int(m.group(1)):
            raise UserError(f"distribution: bin {key!r} in {source} is not a range '[lo,hi)' with lo < hi")
        if not isinstance(value, (int, float)) or value < 0:
            raise UserError(f"distribution: bin {key!r} in {source} has weight {value!r}; expected a number >= 0")
        lo.append(max(1, int(m.group(1))))
        hi.append(int(m.group(2)))
        w.append(float(value))
    weight = np.asarray(w, dtype=np.float64)
    if weight.sum() <= 0:
        raise UserError(f"distribution: {source} has no positive weight")
    return LengthHistogram(np.asarray(lo), np.asarray(hi), weight / weight.sum())


def sample_pack(
    pack_len: int,
    distribution: str = "pile",
    seed: int = 0,
    max_doc_fraction: float = 0.25,
) -> list[int]:
    """Document lengths (summing to ``pack_len``) for one packed sequence."""
    if pack_len <= 0:
        raise UserError(f"seqlen: {pack_len} must be > 0")
    if not 0 < max_doc_fraction <= 1:
        raise UserError(f"max_doc_fraction: {max_doc_fraction} must be in (0, 1]")
    hist = load_distribution(distribution)
    rng = np.random.Generator(np.random.PCG64(seed))
    cap = max(1, int(pack_len * max_doc_fraction))
    pool: list[int] = []
    total = 0
    while total < pack_len:
        for length in hist.sample(rng, 64):
            chunks = [cap] * (int(length) // cap) + ([int(length) % cap] if int(length) % cap else [])
            pool.extend(chunks)
            total += int(length)
    rng.shuffle(pool)
    lengths, room = [], pack_len
    for n in pool:
        if room == 0:
            break
        take = min(n, room)
        lengths.append(take)
        room -= take
    return lengths


# LongCA-bench's "long" packs: 40% of the tokens from a corpus, 60% from documents uniform in 8K-30K tokens.
LONG_DOC_RANGE = (8 * 1024, 30 * 1024)
LONG_REFERENCE_SEQLEN = 128 * 1024


def sample_long_pack(
    pack_len: int,
    distribution: str = "pile",
    seed: int = 0,
    max_doc_fraction: float = 0.25,
    long_fraction: float = 0.6,
    long_range: tuple[int, int] = LONG_DOC_RANGE,
    reference_seqlen: int = LONG_REFERENCE_SEQLEN,
) -> list[int]:
    """Document lengths of a pack mixing corpus documents with long documents (``*_document_long`` masks).

    ``long_fraction`` of the tokens are documents of uniform length in ``long_range``; the rest is a
    :func:`sample_pack` of the corpus ``distribution``. Below ``reference_seqlen`` (128K) the long range is
    scaled by ``pack_len / reference_seqlen`` — a 2K pack holds the same handful of long documents, in
    proportion, as a 128K pack does, instead of one truncated 8K document. The two parts are shuffled together
    with the seeded generator, and the last long document is truncated to the room left.
    """
    n_long = int(round(pack_len * long_fraction))
    n_short = pack_len - n_long
    rng = np.random.Generator(np.random.PCG64([seed, 1]))
    scale = min(1.0, pack_len / reference_seqlen)
    lo = max(1, int(long_range[0] * scale))
    hi = max(lo, int(long_range[1] * scale))
    long_docs: list[int] = []
    room = n_long
    while room > 0:
        take = min(room, int(rng.integers(lo, hi + 1)))
        long_docs.append(take)
        room -= take
    load_distribution(distribution)  # a bad distribution is an error even when no corpus token is drawn
    short_docs = sample_pack(n_short, distribution, seed, max_doc_fraction) if n_short > 0 else []
    docs = short_docs + long_docs
    order = rng.permutation(len(docs))
    return [docs[i] for i in order]
