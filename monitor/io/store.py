"""The session log: one SQLite database (WAL mode) per session directory.

Everything a session records is one append-only **journal** of records, each
committed as it is written, so a process killed at any moment loses at most the
record in flight. Record kinds:

    meta     session facts (patient reference, operator, room, calibration,
             software version; the logger's completeness summary at the end)
    frame    a frame received: plane, seq, frame index, times, pixel format;
             its pixels, losslessly compressed, in ``images``
    result   the analyzer's result for a frame (distance, volumes, overlay)
    alarm    an alarm's lifecycle: state "raised", "acknowledged" or "cleared"
    event    operator events (level, syringe, pause, resume, wall, acknowledge),
             stream faults (stale, resumed, dropped, rejected) and process
             events (started, restarted, log-failed, incomplete)

Several processes append (the logger writes frames, the analyzer results,
alarms and events); each append (or :meth:`SessionStore.atomic` group of
appends) is one ``BEGIN IMMEDIATE`` transaction, so records are numbered
1, 2, 3, ... without gaps in the order they were written.

Tamper evidence: each record carries ``hash = sha256(previous hash, its
fields)``, and a frame's fields include the digest of its compressed pixels.
:meth:`SessionStore.verify` recomputes the chain and reports any gap or
mismatch. Triggers refuse UPDATE and DELETE, so nothing is rewritten by mistake;
someone who drops them breaks the chain.

The typed views ``frames``, ``results``, ``alarms`` and ``events`` are there
for people querying a session with the sqlite3 shell.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import pathname2url

import numpy as np

from monitor.errors import MonitorError
from monitor.io.signing import head_problems, sign_head
from monitor.messages import RESULT_MEASUREMENTS

SCHEMA_VERSION = 2
DB_NAME = "session.sqlite"
GENESIS = "0" * 64
CODEC = "blosc2-zstd1-bitshuffle"
KINDS = ("meta", "frame", "result", "alarm", "event")

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    rec INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    plane TEXT,
    seq INTEGER,
    frame INTEGER,
    level TEXT,
    body TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal_by_kind ON journal (kind, plane, seq);
CREATE TABLE IF NOT EXISTS images (
    rec INTEGER PRIMARY KEY REFERENCES journal (rec),
    data BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS journal_append_only_update BEFORE UPDATE ON journal
    BEGIN SELECT RAISE(ABORT, 'the session journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS journal_append_only_delete BEFORE DELETE ON journal
    BEGIN SELECT RAISE(ABORT, 'the session journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS images_append_only_update BEFORE UPDATE ON images
    BEGIN SELECT RAISE(ABORT, 'the session journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS images_append_only_delete BEFORE DELETE ON images
    BEGIN SELECT RAISE(ABORT, 'the session journal is append-only'); END;
CREATE VIEW IF NOT EXISTS frames AS SELECT rec, time, plane, seq, frame,
    json_extract(body, '$.acq_time') AS acq_time, json_extract(body, '$.gap') AS gap,
    json_extract(body, '$.shape') AS shape, json_extract(body, '$.resent') AS resent
    FROM journal WHERE kind = 'frame';
CREATE VIEW IF NOT EXISTS results AS SELECT rec, time, plane, seq, frame, level,
    json_extract(body, '$.status') AS status, json_extract(body, '$.distance_mm') AS distance_mm,
    json_extract(body, '$.volume_ml') AS volume_ml, json_extract(body, '$.acq_time') AS acq_time
    FROM journal WHERE kind = 'result';
CREATE VIEW IF NOT EXISTS alarms AS SELECT rec, time, plane, frame, level,
    json_extract(body, '$.id') AS alarm, json_extract(body, '$.state') AS state,
    json_extract(body, '$.kind') AS kind, json_extract(body, '$.priority') AS priority,
    json_extract(body, '$.site') AS site, json_extract(body, '$.distance_mm') AS distance_mm
    FROM journal WHERE kind = 'alarm';
CREATE VIEW IF NOT EXISTS events AS SELECT rec, time, plane, level,
    json_extract(body, '$.source') AS source, json_extract(body, '$.event') AS event,
    json_extract(body, '$.detail') AS detail, json_extract(body, '$.value') AS value
    FROM journal WHERE kind = 'event';
"""


class LogWriteError(MonitorError):
    """The session log could not be written (disk full, read-only, locked): monitoring goes on."""


@dataclass(frozen=True)
class Record:
    rec: int
    kind: str
    time: float
    plane: str | None
    seq: int | None
    frame: int | None
    level: str | None
    body: dict


def chain_hash(previous: str, rec: int, kind: str, at: float, plane, seq, frame, level, body: str) -> str:
    fields = json.dumps([previous, rec, kind, repr(at), plane, seq, frame, level, body])
    return hashlib.sha256(fields.encode()).hexdigest()


def load_image_codec() -> None:
    """Import the image codec now: for the logger, which stores every frame, before its first
    frame rather than on it (about 0.5 s of imports)."""
    import blosc2  # noqa: F401


def compress_image(pixels: np.ndarray) -> bytes:
    """Lossless: Blosc2 bit-shuffle + Zstandard, about 7 ms and 35-55 % of the raw size
    for a noisy 1024x1024 16-bit frame, where PNG and JPEG-LS take 60-120 ms."""
    import blosc2  # here, not at the top: its import costs each process that logs no frame 0.5 s

    data = np.ascontiguousarray(pixels)
    return blosc2.compress2(
        data.tobytes(),
        codec=blosc2.Codec.ZSTD,
        clevel=1,
        filters=[blosc2.Filter.BITSHUFFLE],
        typesize=data.itemsize,
        nthreads=1,
    )


def decompress_image(data: bytes, shape, dtype: str) -> np.ndarray:
    import blosc2

    return np.frombuffer(blosc2.decompress2(data), dtype=dtype).reshape(shape)


CHECKPOINT_S = 1.0  # seconds of records at most only in the -wal file (see _checkpoint_if_due)


def _canonical(body: dict) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _open_for_writing(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        version = _schema_version(db)
        if version not in (0, SCHEMA_VERSION):
            raise MonitorError(_version_problem(path, version))
        db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    except BaseException:
        db.close()
        raise
    return db


class SessionStore:
    """A session's journal. ``create`` to write (several processes may), ``open`` to read."""

    def __init__(self, folder: Path, connection: sqlite3.Connection, writable: bool):
        self.folder = folder
        self._db = connection
        self.writable = writable
        self._checkpointed = time.monotonic()

    # -------------------------------------------------------------- opening

    @classmethod
    def create(cls, folder: str | Path, meta: dict | None = None) -> SessionStore:
        """Open the session in ``folder`` for appending, creating it if needed.

        An existing session of this schema is continued: a restarted process
        appends after the last record.
        """
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MonitorError(f"{folder}: cannot create the session directory ({e.strerror})") from None
        path = folder / DB_NAME
        deadline = time.monotonic() + 10.0
        while True:
            try:
                db = _open_for_writing(path)
                break
            except sqlite3.OperationalError as e:
                # Two processes creating the same new log race for the switch to WAL,
                # which SQLite answers "locked" at once rather than waiting.
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise LogWriteError(f"{path}: cannot open the session log for writing ({e})") from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as e:
                raise LogWriteError(f"{path}: cannot open the session log for writing ({e})") from None
        store = cls(folder, db, writable=True)
        if meta is not None:
            created = store.meta().get("created")
            store.add_meta({"schema_version": SCHEMA_VERSION, "created": created or time.time(), **meta})
        return store

    @classmethod
    def open(cls, folder: str | Path) -> SessionStore:
        """Open a session read-only; a logger may still be appending."""
        folder = Path(folder)
        if not folder.exists():
            raise MonitorError(f"{folder}: no such session directory")
        if not folder.is_dir():
            raise MonitorError(f"{folder}: not a session directory")
        path = folder / DB_NAME
        if not path.is_file():
            raise MonitorError(f"{folder}: not a session (no {DB_NAME})")
        # A log copied without its -wal and -shm (or left so by a crash): nobody writes it, and
        # a read-only connection could not create the -shm a WAL database needs ("disk I/O
        # error"). Read as it stands.
        lone = not any(Path(f"{path}{suffix}").exists() for suffix in ("-wal", "-shm"))
        mode = "ro&immutable=1" if lone else "ro"
        try:
            # the path quoted: a folder named with "#", "?" or "%" is still that folder
            uri = f"file:{pathname2url(str(path))}?mode={mode}"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10.0)
            version = _schema_version(db)
            if version != SCHEMA_VERSION:
                raise MonitorError(_version_problem(path, version))
            db.execute("SELECT COUNT(*) FROM journal").fetchone()
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise MonitorError(
                    f"{path}: the session database is locked by another program ({e})"
                ) from None
            raise MonitorError(f"{path}: unreadable session database ({e})") from None
        except sqlite3.DatabaseError as e:
            raise MonitorError(f"{path}: unreadable session database ({e})") from None
        return cls(folder, db, writable=False)

    # -------------------------------------------------------------- writing

    def append(
        self,
        kind: str,
        body: dict,
        plane: str | None = None,
        seq: int | None = None,
        frame: int | None = None,
        level: str | None = None,
        image: bytes | None = None,
        at: float | None = None,
    ) -> int:
        """Append one record (and its image); returns its record number."""
        if kind not in KINDS:
            raise ValueError(f"record kind {kind!r}")
        text = _canonical(body)
        at = time.time() if at is None else float(at)
        with self.atomic():
            try:
                last = self._db.execute("SELECT rec, hash FROM journal ORDER BY rec DESC LIMIT 1").fetchone()
                rec, previous = (last[0] + 1, last[1]) if last else (1, GENESIS)
                digest = chain_hash(previous, rec, kind, at, plane, seq, frame, level, text)
                self._db.execute(
                    "INSERT INTO journal (rec, kind, time, plane, seq, frame, level, body, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rec, kind, at, plane, seq, frame, level, text, digest),
                )
                if image is not None:
                    self._db.execute("INSERT INTO images (rec, data) VALUES (?, ?)", (rec, image))
            except sqlite3.DatabaseError as e:
                raise LogWriteError(
                    f"{self.folder / DB_NAME}: could not write a {kind} record ({e})"
                ) from None
        return rec

    @contextlib.contextmanager
    def atomic(self):
        """Appends inside are committed together, or (killed, failed) not at all."""
        if self._db.in_transaction:
            yield
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as e:
            raise LogWriteError(f"{self.folder / DB_NAME}: could not write ({e})") from None
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.DatabaseError):
                raise LogWriteError(f"{self.folder / DB_NAME}: could not write ({e})") from None
            raise
        self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        """Copy what the write-ahead log holds into the database file every CHECKPOINT_S.

        A committed record is durable across a crash of the process (WAL, synchronous
        NORMAL) but, until checkpointed, lives only in ``session.sqlite-wal``. SQLite
        checkpoints by itself every 1000 pages (4 MB: 1-2 s of small frames, many seconds
        of results and events when the stream pauses). Checkpointing on time bounds what a
        log that loses its -wal file (a crash of the machine, a careless copy of the .sqlite
        alone) can lose to about CHECKPOINT_S. PASSIVE: it never waits for, nor blocks, the
        other processes writing and reading the log."""
        now = time.monotonic()
        if now - self._checkpointed < CHECKPOINT_S:
            return
        self._checkpointed = now
        with contextlib.suppress(sqlite3.DatabaseError):  # busy or failing: the next one tries again
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def add_meta(self, values: dict) -> int:
        return self.append("meta", values)

    def add_frame(
        self,
        header,
        pixels: np.ndarray,
        received_time: float,
        gap: int = 0,
        resent: bool = False,
        level: str | None = None,
    ) -> int:
        """A received frame with its pixels (a FrameHeader from the wire)."""
        image = compress_image(pixels)
        body = {
            "stream": header.session,
            "acq_time": header.acq_time,
            "send_time": header.send_time,
            "received_time": received_time,
            "shape": list(header.shape),
            "dtype": header.dtype,
            "photometric": header.photometric,
            "intensity": header.intensity,
            "bits_stored": header.bits_stored,
            "scale": header.scale,
            "gap": gap,
            "resent": resent,
            "codec": CODEC,
            "image_sha256": hashlib.sha256(image).hexdigest(),
        }
        return self.append(
            "frame", body, header.plane, header.seq, header.frame, level, image=image, at=received_time
        )

    def add_result(self, result, level: str | None = None) -> int:
        """An analyzer Result from the wire."""
        body = {
            k: getattr(result, k)
            for k in (
                "session",
                "acq_time",
                "frame_send_time",
                "send_time",
                "status",
                *RESULT_MEASUREMENTS,
                "volume_scale",
                "known_cleft",
                "alarms",
                "overlay",
                "checks",
                "caveats",
            )
        }
        body["stream"] = body.pop("session")
        return self.append("result", body, result.plane, result.seq, result.frame, level)

    def add_alarm(
        self,
        state: str,
        alarm: dict,
        level: str | None,
        acq_time: float | None,
        sent_as: tuple[str, int] | None = None,
    ) -> int:
        """One step of an alarm's lifecycle: raised, acknowledged or cleared. ``sent_as``: the
        (stream, seq) of the frame it was raised on, which names that frame in the session (its
        source's frame index repeats in a looped replay or after a source restart)."""
        body = {"state": state, "acq_time": acq_time, **alarm}
        if sent_as is not None:
            body["stream"], body["seq"] = sent_as
        return self.append("alarm", body, alarm.get("plane"), None, alarm.get("frame"), level)

    def add_event(
        self,
        source: str,
        event: str,
        detail: str,
        age_ms: float | None = None,
        plane: str | None = None,
        at: float | None = None,
        value=None,
        level: str | None = None,
        acq_time: float | None = None,
    ) -> int:
        """``acq_time``: where in the stream it happened (the newest frame's time), when known."""
        body = {"source": source, "event": event, "detail": detail, "age_ms": age_ms, "value": value}
        if acq_time is not None:
            body["acq_time"] = acq_time
        return self.append("event", body, plane, None, None, level, at=at)

    # -------------------------------------------------------------- reading

    def records(self, kind: str | None = None, plane: str | None = None, after: int = 0) -> list[Record]:
        sql = "SELECT rec, kind, time, plane, seq, frame, level, body FROM journal WHERE rec > ?"
        args: list = [after]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if plane is not None:
            sql += " AND plane = ?"
            args.append(plane)
        rows = self._db.execute(sql + " ORDER BY rec", args).fetchall()
        return [Record(*row[:7], json.loads(row[7])) for row in rows]

    def query(self, sql: str, args=()) -> sqlite3.Cursor:
        """Read-only SQL over the journal, for reports that aggregate (the summary)."""
        return self._db.execute(sql, args)

    def meta(self) -> dict:
        """Every meta record merged, later values winning."""
        merged: dict = {}
        for r in self.records("meta"):
            merged.update(r.body)
        return merged

    def count(self, kind: str, plane: str | None = None, stream: str | None = None) -> int:
        """Records of ``kind``, optionally of one plane and one stream (one run of a source)."""
        sql, args = "SELECT COUNT(*) FROM journal WHERE kind=?", [kind]
        if plane is not None:
            sql, args = sql + " AND plane=?", [*args, plane]
        if stream is not None:
            sql, args = sql + " AND json_extract(body, '$.stream')=?", [*args, stream]
        return self._db.execute(sql, args).fetchone()[0]

    def last_rec(self, kind: str) -> int:
        """The number of the newest record of ``kind``; 0 if there is none."""
        row = self._db.execute("SELECT MAX(rec) FROM journal WHERE kind=?", (kind,)).fetchone()
        return row[0] or 0

    def frames_as_sent(self) -> list[Record]:
        """Every frame logged, once, in the order its source sent them: each run of the source
        (stream) after the one before, and within a run by acquisition time, then send time (the
        two planes of a biplane share acquisition times). A frame a restarted logger was sent
        again is logged only if it lacked it (``resent``: its only copy), after frames sent
        later; it goes back to its place here. (A log could in principle hold a frame twice: the
        first copy is kept.)"""
        seen: set[tuple] = set()
        runs: dict[str, int] = {}  # stream -> its place among the runs, in the order they began
        kept = []
        for r in self.records("frame"):
            key = (r.body["stream"], r.plane, r.seq)
            if key not in seen:
                seen.add(key)
                runs.setdefault(r.body["stream"], len(runs))
                kept.append(r)
        kept.sort(key=lambda r: (runs[r.body["stream"]], r.body["acq_time"], r.body["send_time"]))
        return kept

    def result_keys(self) -> list[tuple[int, str, str, int]]:
        """Every result's (record number, stream, plane, seq), in the order logged: which frame
        each judged, without reading the results' bodies."""
        return self._db.execute(
            "SELECT rec, json_extract(body, '$.stream'), plane, seq FROM journal"
            " WHERE kind='result' ORDER BY rec"
        ).fetchall()

    def last_seq(self, kind: str, plane: str, stream: str) -> int | None:
        """The newest sequence number of ``plane`` from ``stream`` with a ``kind`` record
        (frame or result): where a restarted logger or analyzer picks up."""
        row = self._db.execute(
            "SELECT MAX(seq) FROM journal WHERE kind=? AND plane=? AND json_extract(body, '$.stream')=?",
            (kind, plane, stream),
        ).fetchone()
        return row[0]

    def has_frame(self, plane: str, seq: int, stream: str) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM journal WHERE kind='frame' AND plane=? AND seq=? "
                "AND json_extract(body, '$.stream')=? LIMIT 1",
                (plane, seq, stream),
            ).fetchone()
            is not None
        )

    def image(self, rec: int) -> np.ndarray:
        """The pixels of frame record ``rec``."""
        row = self._db.execute(
            "SELECT j.body, i.data FROM journal j JOIN images i USING (rec) WHERE rec=?", (rec,)
        ).fetchone()
        if row is None:
            raise MonitorError(f"{self.folder}: no image for record {rec}")
        body = json.loads(row[0])
        return decompress_image(row[1], body["shape"], body["dtype"])

    def events(self) -> list[dict]:
        return [{"time": r.time, "plane": r.plane, "level": r.level, **r.body} for r in self.records("event")]

    def results(self) -> list[dict]:
        return [
            {"plane": r.plane, "seq": r.seq, "frame": r.frame, "level": r.level, **r.body}
            for r in self.records("result")
        ]

    def verify(self, images: bool = True) -> list[str]:
        """Recompute the hash chain; returns the problems found (none: intact)."""
        problems: list[str] = []
        previous, expected = GENESIS, 1
        cur = self._db.execute(
            "SELECT rec, kind, time, plane, seq, frame, level, body, hash FROM journal ORDER BY rec"
        )
        for rec, kind, at, plane, seq, frame, level, body, stored in cur:
            if rec != expected:
                problems.append(f"records {expected}..{rec - 1} are missing")
            if chain_hash(previous, rec, kind, at, plane, seq, frame, level, body) != stored:
                what = f"{kind}" + (f" {plane} frame {frame}" if frame is not None else "")
                problems.append(f"record {rec} ({what}) does not match its hash: altered or inserted")
            previous, expected = stored, rec + 1
            if len(problems) > 20:
                problems.append("more problems not listed")
                break
        if images:
            problems += self._verify_images()
        return problems

    def _verify_images(self) -> list[str]:
        problems = []
        cur = self._db.execute(
            "SELECT j.rec, j.plane, j.frame, json_extract(j.body, '$.image_sha256'), i.data "
            "FROM journal j LEFT JOIN images i USING (rec) WHERE j.kind = 'frame' ORDER BY j.rec"
        )
        for rec, plane, frame, digest, data in cur:
            if data is None:
                problems.append(f"record {rec}: the pixels of {plane} frame {frame} are missing")
            elif hashlib.sha256(data).hexdigest() != digest:
                problems.append(f"record {rec}: the pixels of {plane} frame {frame} were altered")
            if len(problems) > 20:
                break
        return problems

    def head(self) -> tuple[int, str]:
        """(number, hash) of the last record; (0, GENESIS) for an empty log."""
        row = self._db.execute("SELECT rec, hash FROM journal ORDER BY rec DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def record_hash(self, rec: int) -> str | None:
        row = self._db.execute("SELECT hash FROM journal WHERE rec = ?", (rec,)).fetchone()
        return None if row is None else str(row[0])

    def sign(self) -> dict:
        """Sign the log's end as it is now (see monitor.io.signing): once every writer is done."""
        rec, digest = self.head()
        return sign_head(self.folder, str(self.meta().get("session")), rec, digest)

    def head_problems(self) -> list[str]:
        """The log against its signed head: rewritten, cut short, added to, or never signed."""
        return head_problems(self.folder, self.meta().get("session"), self.head()[0], self.record_hash)

    def close(self) -> None:
        self._db.close()


def _schema_version(db: sqlite3.Connection) -> int:
    """0 for an empty database; 1 for the first monitor's layout, which predates user_version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
        return 1
    return version


def _version_problem(path: Path, version: int) -> str:
    if version == 0:
        return f"{path}: holds no session journal (empty, or its creation was interrupted)"
    if version > SCHEMA_VERSION:
        return (
            f"{path}: session schema {version} is newer than this monitor "
            f"(reads {SCHEMA_VERSION}); use a newer monitor to audit it"
        )
    return f"{path}: session schema {version} is from an older monitor; this one reads {SCHEMA_VERSION}"
