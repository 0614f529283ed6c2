"""Who may talk to a monitor: ZeroMQ CURVE keys of this installation, checked by ZAP.

Every socket the monitor binds is a CURVE server holding the installation's ``monitor``
key; every socket that connects is a CURVE client holding the key of what it is
(``analyzer``, ``logger``, ``viewer``, ``operator`` for the command line and tools, or
``igtl`` for the OpenIGTLink bridge),
and trusts only the ``monitor`` key. A ZAP handler in each binding process admits only
this installation's client keys, and names the sender by its key: a command's source is
the name of the key it came with, never a field the sender writes. So a process that
cannot read the key directory can neither read the frames, nor publish or answer in the
monitor's place, nor command it.

Keys are made on first use, per installation, in a directory only this user can enter:
``curve/`` in the installation's key directory (``$MONITOR_KEY_DIR``, default
``~/.config/vertebroplasty-monitor``, where the log-signing key also lives)::

    public/NAME.key          the public key (ZeroMQ certificate format)
    private/NAME.key_secret  the key pair, mode 0600

A viewer on another machine needs a copy of ``public/monitor.key`` and of the
``viewer`` pair, in the same layout (``monitor keys`` prints where they are).

What it costs: CURVE encrypts every message once per receiver. Measured with
``monitor bench transport`` (1024x1024 16-bit frames, 2.1 MB), about 2.5 ms to encrypt
and as much to decrypt per frame and receiver; the figures are in the README.

What it does not do: a process of the same user can read the keys (as it could read the
session log, or attach a debugger to the monitor). The boundary is the user account.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from monitor.errors import MonitorError
from monitor.io.signing import key_dir

log = logging.getLogger(__name__)

SERVER = "monitor"  # the key of every socket the monitor binds
CLIENTS = ("analyzer", "logger", "viewer", "operator", "igtl")  # what connects, and so who speaks
OPERATORS = frozenset({"viewer", "operator"})  # whose commands the analyzer carries out, all of them
# Keys that may send some commands only: the OpenIGTLink bridge (``monitor igtl
# --accept-commands``) passes on an acknowledge from 3D Slicer, and nothing else.
LIMITED_COMMANDS = {"igtl": frozenset({"acknowledge"})}


def may_command(key: str | None, action: str) -> bool:
    """Whether the analyzer carries out ``action`` sent with the key named ``key``."""
    return key in OPERATORS or action in LIMITED_COMMANDS.get(key or "", ())


ZAP_DOMAIN = "vertebroplasty-monitor"


class KeyStoreError(MonitorError):
    """The installation's keys cannot be made or read (a directory others can enter, ...)."""


def keys_dir() -> Path:
    """Where this installation's CURVE keys live (see the module's docstring)."""
    return key_dir() / "curve"


def _private_dir(path: Path) -> Path:
    """``path`` created 0700 if missing; refused if others can enter it or another user owns it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError as e:
        raise KeyStoreError(f"{path}: cannot create the monitor's key directory: {e}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise KeyStoreError(
            f"{path}: the monitor's keys must be in a real directory, not a symbolic link or a"
            " file: remove it to make new keys"
        )
    if info.st_uid != os.getuid():
        raise KeyStoreError(
            f"{path}: belongs to user {info.st_uid}, not to this user: the monitor's keys must be"
            " this user's own (set MONITOR_KEY_DIR, or remove it to make new keys)"
        )
    if info.st_mode & 0o077:
        raise KeyStoreError(
            f"{path}: the monitor's keys must be in a directory only this user can enter (mode"
            f" {stat.S_IMODE(info.st_mode):o}): chmod 700 it, or remove it to make new keys"
        )
    return path


@dataclass(frozen=True)
class KeyPair:
    name: str
    public: bytes  # Z85, 40 bytes
    secret: bytes | None  # Z85; None where only the public key is held


class Keys:
    """The installation's keys, made on first use (under a lock: the analyzer and the logger
    start at the same moment on a fresh machine)."""

    def __init__(self, folder: Path | None = None):
        self.folder = _private_dir(folder or keys_dir())
        self.public_dir = self.folder / "public"
        self.private_dir = self.folder / "private"
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for name in (SERVER, *CLIENTS):
                    self._ensure(name)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        if self.private_dir.exists():
            _private_dir(self.private_dir)  # checked on every start, not only when keys are made
        self.names = {self.pair(name).public: name for name in (SERVER, *CLIENTS)}

    def _ensure(self, name: str) -> None:
        secret = self.private_dir / f"{name}.key_secret"
        if secret.exists() or (self.public_dir / f"{name}.key").exists():
            return  # held, or only its public half (a viewer's copy): never replaced
        _private_dir(self.public_dir)
        _private_dir(self.private_dir)
        with tempfile.TemporaryDirectory(dir=self.folder) as scratch:
            public_file, secret_file = zmq.auth.create_certificates(scratch, name)
            os.chmod(secret_file, 0o600)
            # the secret first: it holds both halves, so a crash between the two moves leaves
            # a usable pair, never a public half that stops the pair from being made again
            os.replace(secret_file, secret)
            shutil.move(public_file, self.public_dir / f"{name}.key")
        log.info("made the %s key in %s", name, self.folder)

    def pair(self, name: str) -> KeyPair:
        """``name``'s key pair (the secret half if this installation holds it)."""
        secret_file = self.private_dir / f"{name}.key_secret"
        try:
            if secret_file.exists():
                public, secret = zmq.auth.load_certificate(secret_file)
            else:
                public, secret = zmq.auth.load_certificate(self.public_dir / f"{name}.key")
        except (OSError, ValueError) as e:
            raise KeyStoreError(f"{secret_file}: cannot read the {name} key: {e}") from None
        return KeyPair(name, public, secret)


_keys: Keys | None = None
_keys_lock = threading.Lock()


def installation_keys() -> Keys:
    """This process's view of the installation's keys (read once)."""
    global _keys
    with _keys_lock:
        if _keys is None or _keys.folder != keys_dir():
            _keys = Keys()
        return _keys


ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks, per context (RFC 27/ZAP)


class _ZapHandler(threading.Thread):
    """ZAP for one ZeroMQ context: admits this installation's client keys over CURVE, and
    gives each connection the name of its key as the User-Id its messages carry.

    Its own, rather than pyzmq's ThreadAuthenticator: that one holds a socket in the
    caller's thread, so ``context.term()`` waits forever unless it is stopped first. This
    one holds its only socket in its own thread and ends when the context is terminated.
    Bound before any server socket of the context binds: libzmq admits every client of a
    domain no handler answers for.
    """

    def __init__(self, context: zmq.Context, names: dict[bytes, str]):
        super().__init__(daemon=True, name="zap")
        self._names = names  # raw 32-byte public key -> key name
        self._sock = context.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as e:
            self._sock.close(0)
            raise KeyStoreError(
                f"cannot check who connects: this process's ZeroMQ context already has a ZAP handler ({e})"
            ) from None
        self._context_id = id(context)
        self._refused = 0  # since last said
        self._said = 0.0

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: 200 with the key's name, or 400 with the reason."""
        if len(request) < 6:
            return [b"1.0", request[1] if len(request) > 1 else b"", b"400", b"malformed request", b"", b""]
        version, request_id, domain, _address, _routing_id, mechanism = request[:6]
        credentials = request[6:]
        if version != b"1.0":
            return [b"1.0", request_id, b"400", b"unsupported ZAP version", b"", b""]
        name = self._names.get(credentials[0]) if mechanism == b"CURVE" and len(credentials) == 1 else None
        if domain != ZAP_DOMAIN.encode() or name is None or name == SERVER:
            self._refused += 1
            now = time.monotonic()
            if now - self._said >= 10.0:  # a flood of strangers must not flood the console
                log.warning("refused %d connection(s) without a key of this installation", self._refused)
                self._refused, self._said = 0, now
            return [b"1.0", request_id, b"400", b"not a key of this installation", b"", b""]
        return [b"1.0", request_id, b"200", b"OK", name.encode(), b""]

    def run(self) -> None:
        # It must never stop while its context lives: with no handler answering, libzmq would
        # admit every client. So a request it cannot answer is refused, and the loop goes on.
        try:
            while True:
                request = self._sock.recv_multipart()
                try:
                    reply = self.answer(request)
                except Exception:  # a bug: refuse this one, keep guarding
                    log.exception("ZAP request not understood; refused")
                    reply = [b"1.0", request[1] if len(request) > 1 else b"", b"500", b"error", b"", b""]
                self._sock.send_multipart(reply)
        except zmq.ContextTerminated:
            pass
        except zmq.ZMQError:  # cannot go on guarding: better no process than an open door
            log.exception("the ZAP handler failed; stopping this process")
            os._exit(70)
        finally:
            self._sock.close(0)
            with _zap_lock:
                _zap_handlers.pop(self._context_id, None)


# id(context) -> (context, its ZAP handler); the context is held so that its id stays its own
_zap_handlers: dict[int, tuple[zmq.Context, _ZapHandler]] = {}
_zap_lock = threading.Lock()


def _zap_handler(context: zmq.Context, keys: Keys) -> None:
    with _zap_lock:
        if id(context) in _zap_handlers:
            return
        names = {zmq.utils.z85.decode(public): name for public, name in keys.names.items()}
        handler = _ZapHandler(context, names)
        handler.start()
        _zap_handlers[id(context)] = (context, handler)


def serve(sock: zmq.Socket) -> None:
    """Make ``sock`` (before it binds) a CURVE server with the installation's ``monitor``
    key, admitting only the installation's client keys."""
    keys = installation_keys()
    _zap_handler(sock.context, keys)
    server = keys.pair(SERVER)
    if server.secret is None:
        raise KeyStoreError(
            f"{keys.private_dir}: this installation does not hold the monitor's secret key, so it"
            " cannot serve frames (a viewer-only copy of the keys?)"
        )
    sock.curve_secretkey = server.secret
    sock.curve_publickey = server.public
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN.encode()


def join(sock: zmq.Socket, name: str = "operator") -> None:
    """Make ``sock`` (before it connects) a CURVE client holding ``name``'s key (one of
    CLIENTS: what the connecting process is), that talks only to a server holding the
    monitor's key."""
    if name not in CLIENTS:
        raise ValueError(f"unknown client key {name!r}; expected one of {CLIENTS}")
    keys = installation_keys()
    mine = keys.pair(name)
    if mine.secret is None:
        raise KeyStoreError(f"{keys.private_dir}: no secret key for {mine.name}")
    sock.curve_secretkey = mine.secret
    sock.curve_publickey = mine.public
    sock.curve_serverkey = keys.pair(SERVER).public


def require(names) -> None:
    """KeyStoreError in one line unless this installation holds the secret key of each of
    ``names``: checked before processes start that need them, whose failure would otherwise
    be a traceback in a child and a run that "did not start"."""
    keys = installation_keys()
    for name in names:
        if keys.pair(name).secret is None:
            raise KeyStoreError(
                f"{keys.private_dir}: no secret key for the {name}; remove {keys.folder} to make"
                " the installation's keys anew (viewers elsewhere then need the new ones)"
            )


def sender(part: zmq.Frame) -> str:
    """The name of the key a received message came with ("" if it came unauthenticated,
    which a CURVE server never lets through)."""
    try:
        return part.get("User-Id") or ""
    except (zmq.ZMQError, AttributeError):
        return ""


def describe() -> list[str]:
    """What ``monitor keys`` prints: where the keys are, each key's public half, whose
    secret half this installation holds, and what a viewer elsewhere needs."""
    keys = installation_keys()
    roles = {
        SERVER: "every socket the monitor binds",
        "analyzer": "the analyzer's subscriptions and acknowledgements",
        "logger": "the logger's subscriptions and acknowledgements",
        "viewer": "the live view; its commands are the operator's",
        "operator": "command-line tools; its commands are the operator's",
    }
    lines = [f"CURVE keys of this installation: {keys.folder}"]
    for name in (SERVER, *CLIENTS):
        pair = keys.pair(name)
        held = "secret held" if pair.secret is not None else "public only"
        lines.append(f"  {name:9} {pair.public.decode()}  {held:11}  {roles[name]}")
    lines.append(
        "A viewer on another machine: copy public/monitor.key and private/viewer.key_secret into"
        " curve/ of its key directory ($MONITOR_KEY_DIR there), with the same modes."
    )
    return lines
