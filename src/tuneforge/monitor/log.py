"""The prediction log: every served request as one row (time, model, input hash, text and length, an input embedding,
the prediction with its confidence or the generated length, latency), and the feedback attached to it later (a true
label or a rating). SQLite by default (a file; WAL, so that ``monitor check`` reads while the server writes) or
PostgreSQL (``postgresql://...``). Bounded: past ``max_rows`` the oldest rows are rotated out and counted, never
silently."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

COLUMNS = ("id", "ts", "model", "endpoint", "input_hash", "input_text", "input_chars", "input_words", "embedding",
           "prediction", "confidence", "probabilities", "output_tokens", "latency_ms", "label", "rating", "feedback_ts")
TYPES = {"ts": "DOUBLE PRECISION", "confidence": "DOUBLE PRECISION", "latency_ms": "DOUBLE PRECISION",
         "rating": "DOUBLE PRECISION", "feedback_ts": "DOUBLE PRECISION", "input_chars": "INTEGER",
         "input_words": "INTEGER", "output_tokens": "INTEGER"}
ROTATE_EVERY = 200  # inserts between two size checks


@dataclass
class Prediction:
    """One served request, as the server logs it."""

    model: str
    endpoint: str
    input_text: str | None
    input_hash: str
    input_chars: int
    input_words: int
    embedding: bytes | None = None  # float32, the embedder's vector
    prediction: str | None = None  # the label, or None for generation
    confidence: float | None = None
    probabilities: str | None = None  # JSON {label: p}
    output_tokens: int | None = None
    latency_ms: float | None = None
    id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex[:24]}")
    ts: float = field(default_factory=time.time)


def describe_input(text: str, keep_text: bool = True) -> dict[str, Any]:
    """What the log keeps of an input: its hash and length, and the text itself unless ``keep_text`` is off (NUL
    characters, which PostgreSQL's TEXT cannot hold, become U+FFFD; a lone surrogate is hashed as it is)."""
    digest = hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:16]
    kept = text.replace("\x00", "\ufffd").encode("utf-8", errors="replace").decode("utf-8") if keep_text else None
    return {"input_text": kept, "input_hash": digest, "input_chars": len(text), "input_words": len(text.split())}


class PredictionLog:
    """``add(prediction)``, ``feedback(id, label=, rating=)``, ``rows(model=)``; thread-safe (one connection)."""

    def __init__(self, target: str | Path, max_rows: int = 1_000_000):
        self.target, self.max_rows = str(target), max_rows
        self.postgres = self.target.startswith(("postgresql://", "postgres://"))
        self._lock = threading.RLock()
        self._since_check = 0
        self._connection = self._connect()
        self._create()

    def _connect(self) -> Any:
        if self.postgres:
            import psycopg

            try:
                return psycopg.connect(self.target, autocommit=True)
            except psycopg.Error as exc:
                raise UserError(f"--log-db {self.target}: cannot connect ({str(exc).strip().splitlines()[0]})") from None
        import sqlite3

        path = Path(self.target)
        if not path.parent.is_dir():
            raise UserError(f"--log-db {path}: the folder {path.parent} does not exist")
        connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    def _execute(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                cursor = self._connection.execute(self._sql(statement), params)
            except Exception:
                if not (self.postgres and self._connection.closed):
                    raise
                self._connection = self._connect()  # the PostgreSQL server restarted: connect again, once
                cursor = self._connection.execute(self._sql(statement), params)
            return list(cursor.fetchall()) if cursor.description else []

    def _create(self) -> None:
        blob = "BYTEA" if self.postgres else "BLOB"
        kinds = {**TYPES, "id": "TEXT PRIMARY KEY", "embedding": blob}
        columns = ", ".join(f"{name} {kinds.get(name, 'TEXT')}" for name in COLUMNS)
        self._execute(f"CREATE TABLE IF NOT EXISTS predictions ({columns})")
        self._execute("CREATE INDEX IF NOT EXISTS predictions_model_ts ON predictions (model, ts)")
        self._execute("CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT)")

    def add(self, prediction: Prediction) -> str:
        row = asdict(prediction)
        with self._lock:
            self._execute(f"INSERT INTO predictions ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                          tuple(row.values()))
            self._since_check += 1
            if self._since_check >= ROTATE_EVERY:
                self._since_check = 0
                self.rotate()
        return prediction.id

    def rotate(self) -> int:
        """Past ``max_rows``, the oldest rows go; how many went is kept in the log (``rotated_out``)."""
        with self._lock:
            total = self._execute("SELECT COUNT(*) FROM predictions")[0][0]
            extra = total - self.max_rows
            if extra <= 0:
                return 0
            cutoff = self._execute("SELECT ts FROM predictions ORDER BY ts LIMIT 1 OFFSET ?", (extra - 1,))[0][0]
            gone = self._execute("SELECT COUNT(*) FROM predictions WHERE ts <= ?", (cutoff,))[0][0]
            self._execute("DELETE FROM predictions WHERE ts <= ?", (cutoff,))
            self.set_meta("rotated_out", str(self.rotated_out() + gone))
            return gone

    def rotated_out(self) -> int:
        found = self.meta("rotated_out")
        return int(found) if found else 0

    def meta(self, key: str) -> str | None:
        found = self._execute("SELECT value FROM log_meta WHERE key = ?", (key,))
        return found[0][0] if found else None

    def set_meta(self, key: str, value: str) -> None:
        self._execute("INSERT INTO log_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                      "excluded.value", (key, value))

    def model_of(self, request_id: str) -> str | None:
        found = self._execute("SELECT model FROM predictions WHERE id = ?", (request_id,))
        return found[0][0] if found else None

    def feedback(self, request_id: str, label: str | None = None, rating: float | None = None) -> bool:
        """Attach a true label and/or a rating to a logged request; False when the id is not in the log."""
        if not self._execute("SELECT 1 FROM predictions WHERE id = ?", (request_id,)):
            return False
        self._execute("UPDATE predictions SET label = COALESCE(?, label), rating = COALESCE(?, rating), "
                      "feedback_ts = ? WHERE id = ?", (label, rating, time.time(), request_id))
        return True

    def models(self) -> list[str]:
        return sorted(row[0] for row in self._execute("SELECT DISTINCT model FROM predictions"))

    def rows(self, model: str | None = None, after: tuple[float, str] | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        """The rows in time order (of one model; after the row ``(ts, id)``; at most ``limit``), embeddings as
        float32 arrays, probabilities as dicts."""
        import numpy as np

        conditions, params = [], []
        if model:
            conditions.append("model = ?")
            params.append(model)
        if after is not None:
            conditions.append("(ts > ? OR (ts = ? AND id > ?))")
            params += [after[0], after[0], after[1]]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        bound = f" LIMIT {int(limit)}" if limit else ""
        found = self._execute(f"SELECT {', '.join(COLUMNS)} FROM predictions {where} ORDER BY ts, id{bound}",
                              tuple(params))
        rows = []
        for values in found:
            row = dict(zip(COLUMNS, values))
            if row["embedding"] is not None:
                row["embedding"] = np.frombuffer(bytes(row["embedding"]), dtype=np.float32)
            row["probabilities"] = json.loads(row["probabilities"]) if row["probabilities"] else None
            rows.append(row)
        return rows

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def open_log(target: str | Path, max_rows: int = 1_000_000) -> PredictionLog:
    """A log to read (``monitor check``/``report``, ``retrain``): an SQLite file must exist."""
    text = str(target)
    if not text.startswith(("postgresql://", "postgres://")) and not Path(text).is_file():
        raise UserError(f"{text}: no prediction log there (tuneforge serve --log-db FILE writes one)")
    return PredictionLog(text, max_rows)
