"""The sample recordings bundled in ``recordings/`` and their manifest.

They live beside the package in a source checkout; ``MONITOR_RECORDINGS``
points elsewhere (for an installed package, or a site's own training cases).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from monitor.errors import MonitorError


@dataclass(frozen=True)
class BundledRecording:
    name: str
    description: str
    shows: list[str]
    command: str
    lateral: Path
    ap: Path
    truth: Path


def recordings_dir() -> Path:
    env = os.environ.get("MONITOR_RECORDINGS")
    folder = Path(env) if env else Path(__file__).resolve().parents[1] / "recordings"
    if not (folder / "manifest.json").is_file():
        raise MonitorError(
            f"{folder}: no bundled recordings (manifest.json missing); run from a source "
            "checkout or set MONITOR_RECORDINGS to a folder holding manifest.json"
        )
    return folder


def bundled_recordings() -> list[BundledRecording]:
    folder = recordings_dir()
    manifest = json.loads((folder / "manifest.json").read_text())
    return [
        BundledRecording(
            name=r["name"],
            description=r["description"],
            shows=r["shows"],
            command=r["command"],
            lateral=folder / r["name"] / "lateral.dcm",
            ap=folder / r["name"] / "ap.dcm",
            truth=folder / r["name"] / "truth.json",
        )
        for r in manifest["recordings"]
    ]


def default_recording() -> BundledRecording:
    folder = recordings_dir()
    name = json.loads((folder / "manifest.json").read_text())["default"]
    return next(r for r in bundled_recordings() if r.name == name)
