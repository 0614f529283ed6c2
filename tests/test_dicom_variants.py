"""Recordings as other software writes them: the bundled posterior-leak case re-written with
pydicom the ways other C-arms, converters and PACS exports write the same images, analysed
end to end. Each variant reads as the original, or is refused up front in one line; none may
be analysed wrongly in silence (an independent test of session 72 found each of these)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from monitor.analyzer import VisionAnalysis, analyse_source
from monitor.io.sources import DicomPairSource
from monitor.recordings import bundled_recordings

CASE = next(r for r in bundled_recordings() if r.name == "posterior-leak")


def rewrite(source: Path, target: Path, edit: Callable[[pydicom.Dataset, np.ndarray], np.ndarray]) -> Path:
    """``source`` decoded, its frames (n, rows, columns) passed through ``edit`` (which may also
    change the header), and written uncompressed (explicit VR little endian) to ``target``."""
    ds = pydicom.dcmread(source)
    frames = edit(ds, ds.pixel_array.reshape(-1, ds.Rows, ds.Columns))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.BitsAllocated = frames.dtype.itemsize * 8
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated > 8 else "OB"
    ds.save_as(target, enforce_file_format=True)
    return target


def alarms_of(lateral: Path, ap: Path) -> list[tuple]:
    """(frame, plane, kind, site, priority) of every alarm the analysis raises on the pair."""
    source = DicomPairSource(lateral, ap)
    found = []
    try:
        for _item, result in analyse_source(source, VisionAnalysis()):
            found += [(a["frame"], a["plane"], a["kind"], a["site"], a["priority"]) for a in result.alarms]
    finally:
        source.close()
    return found


@pytest.fixture(scope="module")
def original() -> list[tuple]:
    found = alarms_of(CASE.lateral, CASE.ap)
    assert any(a[2] == "extravasation" and a[3] == "posterior" and a[4] == "high" for a in found), found
    return found


def test_data_declared_with_more_bits_than_it_uses_reads_as_the_original(tmp_path, original):
    """BitsStored 16 for the case's 8-bit values (legal, and common in converters): the LOG
    scale was looked for where no pixel lies and guessed 256 times off, and the posterior leak
    read "0 alarms, 0.00 mL". The range is now the bits the values use."""

    def widened(ds, frames):
        ds.BitsStored, ds.HighBit = 16, 15
        return frames.astype(np.uint16)

    pair = [rewrite(getattr(CASE, p), tmp_path / f"{p}.dcm", widened) for p in ("lateral", "ap")]
    assert pydicom.dcmread(pair[0], stop_before_pixels=True).BitsStored == 16
    assert alarms_of(*pair) == original
