"""The durable result store: one SQLite database (WAL mode) per results path.

Every record is committed the moment its run finishes, so a sweep killed at any moment loses nothing but
the runs in flight; ``--resume`` skips every run already stored. Each invocation of a sweep is a session
with the machine, versions and commit that produced it; every record points to its session.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Iterable, Iterator, Optional

from harness.checks import writable_file
from harness.errors import UserError
from harness.results.records import DIAGNOSTICS, METRIC_PREFIX, flat_row, public_view

# The known columns of an export, in this order: what ran (identity), its outcome, its measured figures, then
# the bookkeeping. Every other record key follows them, sorted (``export_columns``), so nothing is dropped.
FIELDS = (
    "method", "strategy", "workload", "params", "kind", "kernel", "mask", "mask_params", "seqlen", "batch",
    "heads_q", "heads_kv", "head_dim", "dtype", "direction", "decode_tokens", "world_size", "device", "options",
    "status", "reason", "time_ms_median", "time_ms_p20", "time_ms_p80", "samples", "cpu_ms", "flops", "area",
    "tflops", "peak_tflops", "frac_peak", "flop_convention", "peak_mem_bytes", "mem_method", "max_abs_err",
    "gate_errors", "threads", "rank_time_ms", "rank_cpu_ms", "time_imbalance", "rank_area", "area_imbalance",
    "comm_bytes", "comm_bytes_model", "rank_peak_mem_bytes", "cp_info", "mask_info", "wall_s", "timed_s",
    "suite", "key", "session", "finished_at",
)
SESSION_FIELDS = ("hostname", "cpu", "gpu", "commit", "versions", "platform", "python")


def export_columns(rows: Iterable[dict]) -> list[str]:
    """The union of the rows' keys in a stable order: :data:`FIELDS`, then the ``metric.*`` columns, then every
    other key sorted, then ``diagnostics``, then the session's machine metadata."""
    keys: set[str] = set()
    for row in rows:
        keys.update(row)
    known = [f for f in FIELDS if f in keys]
    metrics = sorted(k for k in keys if k.startswith(METRIC_PREFIX))
    diagnostics = [DIAGNOSTICS] if DIAGNOSTICS in keys else []
    rest = sorted(keys - set(known) - set(metrics) - set(diagnostics) - set(SESSION_FIELDS))
    return known + metrics + rest + diagnostics + list(SESSION_FIELDS)


REQUIRED_COLUMNS = {("sessions", "id"), ("sessions", "machine"), ("results", "key"), ("results", "record")}
SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, suite TEXT, started_at REAL, argv TEXT, machine TEXT
);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY, session TEXT, suite TEXT, status TEXT, finished_at REAL, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_session ON results(session);
"""


class ResultStore:
    """Results of one or more sweeps at ``path`` (a ``.db`` file, or a directory holding ``results.db``)."""

    def __init__(self, path: str | Path, create: bool = True):
        """Open (``create``: or create) the store. A path that cannot hold one, or a file that is not an
        lcbench results database, is the user's mistake: one line (:class:`UserError`)."""
        path = Path(path)
        if path.suffix != ".db":
            path = path / "results.db"
        if not create and not path.is_file():
            raise UserError(f"no results at {str(path)!r} (expected a .db file or a directory with results.db)")
        writable_file(path, "results path", create_parents=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self.conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            tables = {name for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and not {"sessions", "results"} <= tables:
                raise UserError(f"results path {str(path)!r} is an SQLite database but not lcbench's "
                                f"(tables: {', '.join(sorted(tables))})")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
            missing = REQUIRED_COLUMNS - {
                (table, col) for table in ("sessions", "results")
                for (_, col, *_rest) in self.conn.execute(f"PRAGMA table_info({table})")
            }
        except sqlite3.Error as e:
            raise UserError(f"results path {str(path)!r} is not a readable lcbench results database: {e}") from None
        if missing:
            raise UserError(f"results path {str(path)!r} is an SQLite database but not lcbench's (missing "
                            f"{', '.join(sorted(f'{t}.{c}' for t, c in missing))})")

    # ----- writing ------------------------------------------------------------------------------------
    def start_session(self, suite: str, machine: dict, argv: Optional[list[str]] = None) -> str:
        sid = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            (sid, suite, time.time(), json.dumps(argv or []), json.dumps(machine)),
        )
        return sid

    def put(self, record: dict, session: str, suite: str) -> None:
        """Store one finished run durably (replacing an earlier record of the same run)."""
        record = {**record, "session": session, "suite": suite, "finished_at": time.time()}
        self.conn.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
            (record["key"], session, suite, record["status"], record["finished_at"], json.dumps(record, default=str)),
        )

    # ----- reading ------------------------------------------------------------------------------------
    def done_keys(self) -> set[str]:
        return {k for (k,) in self.conn.execute("SELECT key FROM results")}

    def records(self, suite: Optional[str] = None, session: Optional[str] = None) -> list[dict]:
        query, args = "SELECT record FROM results", []
        clauses = []
        if suite:
            clauses.append("suite = ?")
            args.append(suite)
        if session:
            clauses.append("session = ?")
            args.append(session)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        return [json.loads(r) for (r,) in self.conn.execute(query + " ORDER BY finished_at", args)]

    def sessions(self) -> dict[str, dict]:
        rows = self.conn.execute("SELECT id, suite, started_at, machine FROM sessions ORDER BY started_at")
        return {sid: {"suite": suite, "started_at": t, **json.loads(m)} for sid, suite, t, m in rows}

    def export_rows(self) -> Iterator[dict]:
        """Records as flat rows: every field of the record's public view (a non-ok run's figures only under
        ``diagnostics``), its metrics as ``metric.<name>`` columns, then the machine metadata of its session.

        Values stay as stored (dicts and lists included); the export format decides how to write them."""
        sessions = self.sessions()
        for rec in self.records():
            row = flat_row(public_view(rec, diagnostics=True))
            meta = sessions.get(rec.get("session"), {})
            for f in SESSION_FIELDS:
                row[f] = meta.get(f)
            yield row

    def close(self) -> None:
        self.conn.close()

