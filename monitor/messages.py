"""The one wire format between the monitor's processes (version 1).

Every message is a ZeroMQ multipart message whose first part is a topic, so a
subscriber can filter by prefix, and whose second part is a small UTF-8 JSON
header. A frame message has a third part: the raw pixel buffer, row-major,
little-endian, sent and received without copies.

    frame      [b"frame.lateral" | b"frame.ap", header, pixels]
    heartbeat  [b"heartbeat", header]

Frame header fields (all required unless marked optional):

    v            format version, 1
    kind         "frame"
    session      session id (string)
    plane        "lateral" or "ap"
    seq          per-plane sequence number from the source, +1 per frame sent;
                 a jump is a dropped frame
    frame        0-based frame index in the recording (or grabber frame count)
    acq_time     acquisition time, seconds from the start of the recording
    send_time    the sender's wall clock (time.time()) when it was sent
    shape        [rows, columns]
    dtype        "uint8" or "uint16"
    intensity    "LIN", "LOG" or null (unknown)
    photometric  "MONOCHROME1" or "MONOCHROME2"
    bits_stored  8..16
    scale        optional: {"spacing_mm": [row, column], "source": "dicom"} or
                 {"calibration": PROFILE_ID, "source": "calibration"}; null in pixels only

Heartbeat header: v, kind "heartbeat", session, source (who sends it),
send_time, seq.

Decoding checks everything and raises :class:`MessageError` with a short
``reason`` a receiver counts (``garbled``, ``version``, ``size``) and a detail
it logs; it never lets a malformed message through.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

VERSION = 1
PLANES = ("lateral", "ap")
DTYPES = {"uint8": np.uint8, "uint16": np.uint16}
FRAME_TOPICS = {plane: f"frame.{plane}".encode() for plane in PLANES}
HEARTBEAT_TOPIC = b"heartbeat"
MAX_SIDE = 8192


class MessageError(ValueError):
    """A message that must be rejected; ``reason`` is the counter to bump."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FrameHeader:
    session: str
    plane: str
    seq: int
    frame: int
    acq_time: float
    send_time: float
    shape: tuple[int, int]
    dtype: str
    photometric: str
    bits_stored: int
    intensity: str | None = None
    scale: dict | None = None
    v: int = VERSION
    kind: str = field(default="frame", init=False)

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * np.dtype(DTYPES[self.dtype]).itemsize


@dataclass(frozen=True)
class Heartbeat:
    session: str
    source: str
    send_time: float
    seq: int
    v: int = VERSION
    kind: str = field(default="heartbeat", init=False)


def encode_frame(header: FrameHeader, pixels: np.ndarray) -> list:
    """Multipart parts for a frame; the pixel part is the array itself (no copy)."""
    if pixels.shape != tuple(header.shape) or pixels.dtype != DTYPES[header.dtype]:
        raise ValueError(f"pixels {pixels.shape} {pixels.dtype} do not match the header")
    if not pixels.flags.c_contiguous:
        pixels = np.ascontiguousarray(pixels)
    return [FRAME_TOPICS[header.plane], json.dumps(asdict(header)).encode(), pixels]


def encode_heartbeat(beat: Heartbeat) -> list[bytes]:
    return [HEARTBEAT_TOPIC, json.dumps(asdict(beat)).encode()]


def decode(parts: list) -> tuple[FrameHeader, np.ndarray] | Heartbeat:
    """Parse a received multipart message (bytes or zmq.Frame parts).

    Frame pixels are a read-only view on the received buffer, not a copy.
    """
    if len(parts) < 2:
        raise MessageError("garbled", f"{len(parts)} part(s); expected a topic and a header")
    topic = bytes(_buffer(parts[0]))
    try:
        raw = json.loads(bytes(_buffer(parts[1])).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MessageError("garbled", f"header is not JSON ({e.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise MessageError("garbled", "header is not a JSON object")
    if raw.get("v") != VERSION:
        raise MessageError("version", f"format version {raw.get('v')!r}; this monitor speaks {VERSION}")
    if topic == HEARTBEAT_TOPIC:
        if len(parts) != 2:
            raise MessageError("garbled", f"heartbeat with {len(parts)} parts")
        return Heartbeat(
            session=_field(raw, "session", str),
            source=_field(raw, "source", str),
            send_time=_number(raw, "send_time"),
            seq=_field(raw, "seq", int),
        )
    plane = next((p for p, t in FRAME_TOPICS.items() if t == topic), None)
    if plane is None:
        raise MessageError("garbled", f"unknown topic {topic[:40]!r}")
    if len(parts) != 3:
        raise MessageError("garbled", f"frame with {len(parts)} parts; expected 3")
    header = _frame_header(raw, plane)
    buffer = _buffer(parts[2])
    if len(buffer) != header.nbytes:
        raise MessageError(
            "size",
            f"{plane} frame {header.frame}: payload {len(buffer)} bytes, header says "
            f"{header.shape[0]}x{header.shape[1]} {header.dtype} = {header.nbytes}",
        )
    pixels = np.frombuffer(buffer, dtype=DTYPES[header.dtype]).reshape(header.shape)
    pixels.flags.writeable = False  # shared with ZeroMQ and with every other consumer
    return header, pixels


def _buffer(part) -> memoryview:
    """The bytes of a part without copying: zmq.Frame.buffer, or the bytes themselves."""
    buf = getattr(part, "buffer", None)
    return buf if buf is not None else memoryview(part)


def _field(raw: dict, name: str, kind: type):
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MessageError("garbled", f"field {name!r} is {value!r}; expected {kind.__name__}")
    return value


def _number(raw: dict, name: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MessageError("garbled", f"field {name!r} is {value!r}; expected a number")
    return float(value)


def _frame_header(raw: dict, plane: str) -> FrameHeader:
    if raw.get("kind") != "frame" or raw.get("plane") != plane:
        raise MessageError("garbled", f"header kind/plane {raw.get('kind')!r}/{raw.get('plane')!r}")
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n <= MAX_SIDE for n in shape)
    ):
        raise MessageError("garbled", f"shape {shape!r}")
    dtype = raw.get("dtype")
    if dtype not in DTYPES:
        raise MessageError("garbled", f"dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    photometric = raw.get("photometric")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MessageError("garbled", f"photometric {photometric!r}")
    intensity = raw.get("intensity")
    if intensity not in (None, "LIN", "LOG", "DISP"):
        raise MessageError("garbled", f"intensity {intensity!r}")
    scale = raw.get("scale")
    if scale is not None and not isinstance(scale, dict):
        raise MessageError("garbled", f"scale {scale!r}")
    bits = _field(raw, "bits_stored", int)
    if not 1 <= bits <= 16:
        raise MessageError("garbled", f"bits_stored {bits}")
    return FrameHeader(
        session=_field(raw, "session", str),
        plane=plane,
        seq=_field(raw, "seq", int),
        frame=_field(raw, "frame", int),
        acq_time=_number(raw, "acq_time"),
        send_time=_number(raw, "send_time"),
        shape=(shape[0], shape[1]),
        dtype=dtype,
        photometric=photometric,
        bits_stored=bits,
        intensity=intensity,
        scale=scale,
    )
