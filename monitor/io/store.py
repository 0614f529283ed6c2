"""The session log: one SQLite database (WAL mode) per session directory.

Append-only tables, one row per frame received, per result, per event, each
committed as it arrives, so a process killed at any moment loses at most the
message in flight. Readers (audit, replay) open it read-only while a logger may
still be writing.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from monitor.errors import MonitorError
from monitor.messages import Result

SCHEMA_VERSION = 1
DB_NAME = "session.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY, plane TEXT NOT NULL, seq INTEGER NOT NULL, frame INTEGER NOT NULL,
    acq_time REAL NOT NULL, send_time REAL NOT NULL, received_time REAL NOT NULL,
    rows INTEGER NOT NULL, cols INTEGER NOT NULL, gap INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, plane TEXT NOT NULL, seq INTEGER NOT NULL, frame INTEGER NOT NULL,
    acq_time REAL NOT NULL, status TEXT NOT NULL, distance_mm REAL, distance_px REAL, volume_ml REAL,
    plane_volume_ml REAL, seconds_to_line REAL,
    alarms TEXT NOT NULL, overlay TEXT NOT NULL, frame_send_time REAL NOT NULL, send_time REAL NOT NULL,
    received_time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, source TEXT NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL, age_ms REAL, plane TEXT);
"""


class SessionStore:
    def __init__(self, folder: Path, connection: sqlite3.Connection):
        self.folder = folder
        self._db = connection

    @classmethod
    def create(cls, folder: str | Path, meta: dict) -> SessionStore:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MonitorError(f"{folder}: cannot create the session directory ({e.strerror})") from None
        path = folder / DB_NAME
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        db.executescript(SCHEMA)
        existing = dict(db.execute("SELECT key, value FROM meta"))
        if existing and int(existing.get("schema_version", 0)) != SCHEMA_VERSION:
            raise MonitorError(
                f"{path}: session schema {existing.get('schema_version')}, expected {SCHEMA_VERSION}"
            )
        store = cls(folder, db)
        store.set_meta(
            {"schema_version": SCHEMA_VERSION, "created": existing.get("created", time.time()), **meta}
        )
        return store

    @classmethod
    def open(cls, folder: str | Path) -> SessionStore:
        folder = Path(folder)
        path = folder / DB_NAME
        if not path.is_file():
            raise MonitorError(f"{folder}: not a session (no {DB_NAME})")
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise MonitorError(f"{path}: unreadable session database ({e})") from None
        if version is None or int(json.loads(version[0])) > SCHEMA_VERSION:
            raise MonitorError(f"{path}: session schema {version and version[0]} is newer than this monitor")
        return cls(folder, db)

    def set_meta(self, values: dict) -> None:
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def add_frame(
        self,
        plane: str,
        seq: int,
        frame: int,
        acq_time: float,
        send_time: float,
        received_time: float,
        shape: tuple[int, int],
        gap: int,
    ) -> None:
        self._db.execute(
            "INSERT INTO frames (plane, seq, frame, acq_time, send_time, received_time, rows, cols, gap) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (plane, seq, frame, acq_time, send_time, received_time, shape[0], shape[1], gap),
        )

    def add_result(self, r: Result, received_time: float) -> None:
        self._db.execute(
            "INSERT INTO results (plane, seq, frame, acq_time, status, distance_mm, distance_px, volume_ml, "
            "plane_volume_ml, seconds_to_line, alarms, overlay, frame_send_time, send_time, received_time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.plane,
                r.seq,
                r.frame,
                r.acq_time,
                r.status,
                r.distance_mm,
                r.distance_px,
                r.volume_ml,
                r.plane_volume_ml,
                r.seconds_to_line,
                json.dumps(r.alarms),
                json.dumps(r.overlay),
                r.frame_send_time,
                r.send_time,
                received_time,
            ),
        )

    def add_event(
        self,
        source: str,
        event: str,
        detail: str,
        age_ms: float | None = None,
        plane: str | None = None,
        at: float | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO events (time, source, event, detail, age_ms, plane) VALUES (?, ?, ?, ?, ?, ?)",
            (at if at is not None else time.time(), source, event, detail, age_ms, plane),
        )

    def count(self, table: str, plane: str | None = None) -> int:
        if table not in ("frames", "results", "events"):
            raise ValueError(table)
        if plane is None:
            return self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        return self._db.execute(f"SELECT COUNT(*) FROM {table} WHERE plane=?", (plane,)).fetchone()[0]

    def events(self) -> list[dict]:
        cur = self._db.execute("SELECT time, source, event, detail, age_ms, plane FROM events ORDER BY id")
        return [
            dict(zip(("time", "source", "event", "detail", "age_ms", "plane"), row, strict=True))
            for row in cur
        ]

    def results(self) -> list[dict]:
        cur = self._db.execute(
            "SELECT plane, seq, frame, acq_time, status, distance_mm, distance_px, volume_ml, "
            "plane_volume_ml, seconds_to_line, alarms, overlay, frame_send_time, send_time, received_time "
            "FROM results ORDER BY id"
        )
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in cur]
        for row in rows:
            row["alarms"] = json.loads(row["alarms"])
            row["overlay"] = json.loads(row["overlay"])
        return rows

    def close(self) -> None:
        self._db.close()
