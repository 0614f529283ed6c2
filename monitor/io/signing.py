"""The signed head of a session log: what makes its hash chain worth its name.

The journal's SHA-256 chain shows an edit, unless whoever edits also recomputes the
chain from there on, which needs no secret. So when a run ends, the last record's number
and hash are signed with HMAC-SHA256 under this installation's key and written beside
the log as ``session.head``. An edited log no longer ends in the signed hash; a log whose
tail was deleted no longer reaches the signed record; a head forged without the key does
not verify.

The key is 32 random bytes made on first use in ``$MONITOR_KEY_DIR`` (default
``~/.config/vertebroplasty-monitor``), a directory only its user can read. A log
audited on another installation cannot have its head checked there (the audit says so):
copy the key to QA's workstation, or audit where the session was recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from monitor.errors import MonitorError

HEAD_NAME = "session.head"
DIGEST_NAME = "session.digest.json"  # the QA summary's digest of the closed log, signed
KEY_NAME = "log-signing.key"


def key_dir() -> Path:
    if os.environ.get("MONITOR_KEY_DIR"):
        return Path(os.environ["MONITOR_KEY_DIR"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "vertebroplasty-monitor"


def installation_key(create: bool = True) -> bytes | None:
    """This installation's signing key, made (user-only) the first time one is needed to
    sign; None when there is none and ``create`` is False (checking needs no new key)."""
    folder = key_dir()
    path = folder / KEY_NAME
    if not path.exists():
        if not create:
            return None
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = folder / f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
            try:  # whole or not at all; a concurrent first use keeps the key that won
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        except OSError as e:
            raise MonitorError(f"{path}: cannot create the log signing key ({e.strerror})") from None
    key = path.read_bytes()
    if len(key) != 32:
        raise MonitorError(f"{path}: not a signing key (32 bytes expected, {len(key)} found)")
    return key


def key_id(key: bytes) -> str:
    """A public name for a key (its digest's first 16 hex digits), to tell keys apart."""
    return hashlib.sha256(b"monitor-log-key:" + key).hexdigest()[:16]


def _signature(key: bytes, session: str, rec: int, digest: str) -> str:
    message = json.dumps([session, rec, digest]).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_head(folder: Path, session: str, rec: int, digest: str) -> dict:
    """Write ``session.head`` for a log whose last record is ``rec`` with hash ``digest``."""
    key = installation_key()
    head = {
        "session": session,
        "rec": rec,
        "hash": digest,
        "key_id": key_id(key),
        "hmac_sha256": _signature(key, session, rec, digest),
    }
    _replace(folder / HEAD_NAME, json.dumps(head, indent=1) + "\n")
    return head


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def head_problems(folder: Path, session: str | None, last_rec: int, hash_at) -> list[str]:
    """What is wrong with the log against its signed head (none: it verifies).

    ``last_rec``: the number of the log's last record now (0 if none); ``hash_at(rec)``:
    the stored hash of record ``rec``, or None if there is no such record.
    """
    path = folder / HEAD_NAME
    if not path.exists():
        return [f"no signed head ({HEAD_NAME}): the run did not close this log, or its head was removed"]
    try:
        head = json.loads(path.read_text())
        rec, digest, signature = int(head["rec"]), str(head["hash"]), str(head["hmac_sha256"])
        signer = str(head["key_id"])
        if not all(c in "0123456789abcdef" for c in digest + signature):
            raise ValueError("not hex")
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return [f"{HEAD_NAME} is unreadable"]
    key = installation_key(create=False)
    if key is None:
        return [f"no log signing key on this installation ({key_dir()}): the head cannot be checked here"]
    if signer != key_id(key):
        return [f"the head is signed with key {signer}, not this installation's: it cannot be checked here"]
    if not hmac.compare_digest(signature, _signature(key, str(session), rec, digest)):
        return ["the signed head does not verify: it was forged or belongs to another session"]
    if last_rec < rec:
        return [f"the log ends at record {last_rec}, its signed head at {rec}: records were deleted"]
    stored = hash_at(rec)
    if stored is None or not hmac.compare_digest(stored, digest):
        return [f"record {rec} is not the one signed: the log was rewritten (its chain recomputed)"]
    if last_rec > rec:
        return [f"{last_rec - rec} record(s) were appended after the log was closed and signed"]
    return []


def sign_digest(folder: Path, digest: dict, stamp: str, version: int) -> None:
    """Write ``session.digest.json``: what the QA summary needs of this closed log
    (``monitor.audit.session_digest``, format ``version``), for the log as it is now
    (``stamp``: its files' sizes and modification times), signed with this installation's key
    so that a summary may take it instead of reading the log."""
    key = installation_key()
    body = {"version": version, "stamp": stamp, "digest": digest}
    record = {**body, "key_id": key_id(key), "hmac_sha256": _body_signature(key, body)}
    _replace(folder / DIGEST_NAME, json.dumps(record) + "\n")


def signed_digest(folder: Path, stamp: str, version: int, key: bytes | None = None) -> dict | None:
    """The digest written at close, when it is for the log as it is now (``stamp``), of
    format ``version``, and signed with this installation's key (``key``, read once by a
    caller that checks thousands); else None (read the log)."""
    try:
        record = json.loads((folder / DIGEST_NAME).read_text())
        body = {k: record[k] for k in ("version", "stamp", "digest")}
        signature, signer = str(record["hmac_sha256"]), str(record["key_id"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    key = key or installation_key(create=False)
    if body["version"] != version or body["stamp"] != stamp or key is None or signer != key_id(key):
        return None
    if not hmac.compare_digest(signature, _body_signature(key, body)):
        return None
    return body["digest"] if isinstance(body["digest"], dict) else None


def _body_signature(key: bytes, body: dict) -> str:
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, b"monitor-digest:" + message, hashlib.sha256).hexdigest()
