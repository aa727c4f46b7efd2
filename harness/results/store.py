"""The durable result store: one SQLite database (WAL mode) per results path.

Every record is committed the moment its run finishes, so a sweep killed at any moment loses nothing but
the runs in flight; ``--resume`` skips every run already stored. Each invocation of a sweep is a session
with the machine, versions and commit that produced it; every record points to its session.

Nothing stored can poison the file: ``put`` checks each record (:func:`harness.results.records.storable`: a
malformed one is stored as an ``error`` record saying what was wrong), and the readers skip and count a row
that is not a valid record (:attr:`ResultStore.malformed`) instead of failing on it. A store opened only for
reading (``create=False``) writes nothing: a read-only file, or one in a read-only directory, is read through
SQLite's ``mode=ro`` (``immutable`` where not even its ``-shm`` can be made). A corrupt database, or any
SQLite failure, is one line (:class:`UserError`). A sweep holds :meth:`ResultStore.exclusive` (a lock file
naming its owner) so two drivers never write one file.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional
from urllib.parse import quote

from harness.user_input import writable_file
from harness.errors import UserError
from harness.results.lock import ResultsLock
from harness.results.records import (DIAGNOSTICS, FLATTENED, flat_row, public_view, storable, upgraded,
                                     validate_record)
from harness.results.schema import EXPORT_ORDER

# The declared columns of an export, in the schema's order (identity, outcome, figures, facts, conditions,
# bookkeeping); the metric and fact columns, then every undeclared key sorted, follow (``export_columns``).
FIELDS = tuple(name for name in EXPORT_ORDER if name not in (DIAGNOSTICS, *FLATTENED))
SESSION_FIELDS = ("hostname", "cpu", "gpu", "commit", "versions", "platform", "python")


def export_columns(rows: Iterable[dict]) -> list[str]:
    """The union of the rows' keys in a stable order: :data:`FIELDS`, then the ``metric.*`` and ``fact.*``
    columns, then every other key sorted, then ``diagnostics``, then the session's machine metadata."""
    keys: set[str] = set()
    for row in rows:
        keys.update(row)
    known = [f for f in FIELDS if f in keys]
    metrics = sorted(k for k in keys if k.startswith(tuple(FLATTENED.values())))
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


MAX_DEPTH = 32  # nesting kept by plain_data; deeper values (or a cycle) become text


def plain_data(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data: mappings (keys as text) and sequences as dicts and lists, numpy/torch scalars as
    Python numbers, anything else as its text (as ``json.dumps(default=str)`` would)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth >= MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels>"
    if isinstance(value, Mapping):
        return {str(k): plain_data(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v, depth + 1) for v in value]
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return plain_data(value.item(), depth + 1)  # a numpy or torch scalar
    return str(value)


def parse_record(text: Any) -> tuple[Optional[dict], Optional[str]]:
    """(record, None) for a stored row that is a valid record, else (None, what is wrong with it)."""
    try:
        record = json.loads(text)
    except (TypeError, ValueError, RecursionError) as e:
        return None, f"not JSON ({type(e).__name__})"
    problems = validate_record(record)
    return (None, problems[0]) if problems else (upgraded(record), None)


def newest_results(folder: str | Path) -> Path:
    """The most recently modified ``*.db`` file directly in ``folder`` (where ``lcbench run`` writes); none
    there is the user's mistake (:class:`UserError`, naming the folder)."""
    folder = Path(folder)
    found = sorted((p for p in folder.glob("*.db") if p.is_file()), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no results files (*.db) in {str(folder)!r}: give a path, or run a suite first "
                        "(lcbench run SUITE --results FILE)")
    return found[-1]


class ResultStore:
    """Results of one or more sweeps at ``path`` (a ``.db`` file, or a directory holding ``results.db``)."""

    def __init__(self, path: str | Path, create: bool = True):
        """Open (``create``: or create, for writing) the store. A path that cannot hold one, or a file that
        is not a readable lcbench results database (corrupt included), is the user's mistake: one line
        (:class:`UserError`). Without ``create`` nothing is written, so a read-only file reads too."""
        path = Path(path)
        if path.suffix != ".db":
            path = path / "results.db"
        if not create and not path.is_file():
            raise UserError(f"no results at {str(path)!r} (expected a .db file or a directory with results.db)")
        if create:
            writable_file(path, "results path", create_parents=True)
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.malformed: dict[int, str] = {}  # rowid -> what is wrong with that row, over every read so far
        self.notes: list[str] = []  # what a reader should know about how the file was read
        self.conn = self._open_for_writing() if create else self._open_for_reading()

    # ----- opening ------------------------------------------------------------------------------------
    def _unreadable(self, e: Exception) -> UserError:
        return UserError(f"results path {str(self.path)!r} is not a readable lcbench results database: {e}")

    def _check(self, conn: sqlite3.Connection, schema: bool) -> None:
        """The file is an intact lcbench database (``schema``: create the tables of a new one)."""
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and not {"sessions", "results"} <= tables:
            raise UserError(f"results path {str(self.path)!r} is an SQLite database but not lcbench's "
                            f"(tables: {', '.join(sorted(tables))})")
        damage = [row for (row,) in conn.execute("PRAGMA quick_check(5)") if row != "ok"]
        if damage:
            raise self._unreadable(f"it is corrupt (sqlite quick_check: {damage[0]}); "
                                   f"`sqlite3 {self.path} .recover` may salvage its rows")
        if schema:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
        present = {(table, col) for table in ("sessions", "results")
                   for (_, col, *_rest) in conn.execute(f"PRAGMA table_info({table})")}
        missing = REQUIRED_COLUMNS - present
        if missing:
            raise UserError(f"results path {str(self.path)!r} is an SQLite database but not lcbench's (missing "
                            f"{', '.join(sorted(f'{t}.{c}' for t, c in missing))})")

    def _connect(self, target: str, uri: bool, schema: bool) -> sqlite3.Connection:
        """A checked connection (:meth:`_check`); closed again when the check fails."""
        conn = sqlite3.connect(target, uri=uri, timeout=30, isolation_level=None)
        try:
            self._check(conn, schema)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_for_writing(self) -> sqlite3.Connection:
        try:
            return self._connect(str(self.path), uri=False, schema=True)
        except sqlite3.Error as e:
            raise self._unreadable(e) from None

    def _open_for_reading(self) -> sqlite3.Connection:
        """Read-write where the file and its directory are writable (SQLite then removes its ``-wal``/``-shm``
        on close, and nothing is written). Elsewhere ``immutable`` when no ``-wal`` file holds records not yet
        in the file (exact, and it creates nothing), else ``mode=ro`` (it reads them, but needs a ``-shm``),
        falling back to ``immutable``: each tried in turn."""
        writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        wal = Path(f"{self.path}-wal")
        pending = wal.exists() and wal.stat().st_size > 0
        modes = ["mode=rw"] if writable else []
        modes += ["mode=ro", "mode=ro&immutable=1"] if pending else ["mode=ro&immutable=1"]
        uri = "file:" + quote(str(self.path.resolve()))
        *first, last = modes
        for mode in first:
            try:
                return self._connect(f"{uri}?{mode}", uri=True, schema=False)
            except sqlite3.OperationalError:  # cannot open this way (no -shm possible here): try the next
                continue
            except sqlite3.Error as e:
                raise self._unreadable(e) from None
        try:
            conn = self._connect(f"{uri}?{last}", uri=True, schema=False)
        except sqlite3.Error as e:
            raise self._unreadable(e) from None
        if "immutable" in last and pending:
            self.notes.append(f"{self.path}: read without its -wal file (read-only here): the records a "
                              f"running or killed sweep has not checkpointed are not shown")
        return conn

    def _rows(self, query: str, args: Iterable = ()) -> list[tuple]:
        """All rows of a query; a damaged file is one line, whatever SQLite says."""
        try:
            return self.conn.execute(query, tuple(args)).fetchall()
        except sqlite3.Error as e:
            raise self._unreadable(e) from None

    def _write(self, query: str, args: Iterable) -> None:
        try:
            self.conn.execute(query, tuple(args))
        except sqlite3.Error as e:
            raise UserError(f"results path {str(self.path)!r}: cannot store a record ({e})") from None

    # ----- writing ------------------------------------------------------------------------------------
    def exclusive(self) -> ResultsLock:
        """The lock a sweep holds on this file for its duration (``<db>.lock``, naming its owner): a second
        driver is one line naming the first; a lock whose owner is gone is taken over."""
        return ResultsLock(self.path)

    def start_session(self, suite: str, machine: dict, argv: Optional[list[str]] = None) -> str:
        sid = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._write("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                    (sid, suite, time.time(), json.dumps(plain_data(argv or [])), json.dumps(plain_data(machine))))
        return sid

    def put(self, record: Any, session: str, suite: str) -> Optional[dict]:
        """Store one finished run durably (replacing an earlier record of the same run); returns the record
        stored. It is checked first (:func:`~harness.results.records.storable`): a malformed one — metrics
        not a mapping, a NaN, a negative time, a field of the wrong type — is stored as an ``error`` record
        saying what was wrong, never as it came. A record that names no run (not a mapping, no key) cannot be
        stored: None."""
        record = plain_data(record)
        if isinstance(record, dict):
            record = {**record, "session": session, "suite": suite, "finished_at": time.time()}
        stored = storable(record)
        if stored is None:
            return None
        self._write("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)",
                    (stored["key"], session, suite, stored["status"], stored["finished_at"],
                     json.dumps(stored, allow_nan=False)))
        return stored

    # ----- reading ------------------------------------------------------------------------------------
    def done_keys(self) -> set[str]:
        """Keys of the runs stored with a valid record (a malformed row is run again on resume)."""
        return {r["key"] for r in self.records()}

    def records(self, suite: Optional[str] = None, session: Optional[str] = None) -> list[dict]:
        """The valid records (of ``suite``/``session``), oldest first; a row that is not one is skipped and
        counted in :attr:`malformed`."""
        query, args = "SELECT rowid, record FROM results", []
        clauses = []
        if suite:
            clauses.append("suite = ?")
            args.append(suite)
        if session:
            clauses.append("session = ?")
            args.append(session)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        out = []
        for rowid, text in self._rows(query + " ORDER BY finished_at", args):
            record, problem = parse_record(text)
            if problem is not None:
                self.malformed[rowid] = problem
            else:
                out.append(record)
        return out

    def skipped_note(self) -> Optional[str]:
        """``skipped N malformed records in PATH (first: ...)`` when a read skipped any, else None."""
        if not self.malformed:
            return None
        n = len(self.malformed)
        first = self.malformed[min(self.malformed)]
        return f"skipped {n} malformed record{'s' * (n != 1)} in {self.path} (the first: {first})"

    def sessions(self) -> dict[str, dict]:
        """Each session's suite, start time and machine metadata (empty where that metadata is unreadable)."""
        out = {}
        for sid, suite, t, m in self._rows("SELECT id, suite, started_at, machine FROM sessions ORDER BY started_at"):
            try:
                machine = json.loads(m)
            except (TypeError, ValueError, RecursionError):
                machine = {}
            out[sid] = {"suite": suite, "started_at": t, **(machine if isinstance(machine, dict) else {})}
        return out

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
