"""Monitoring coverage and plausibility: the monitor never reports a silent clean session.

A level whose frames could not be checked against the 5 mm rule and the leak check is NOT
MONITORED wherever the operator and QA look (the run's exit status, the audit's text, JSON,
HTML and exit status, the summary), and a recording whose scale is missing or impossible is
refused before it starts, naming the tag. Issue 24, findings A.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest

from monitor.errors import ImplausibleGeometryError, MissingGeometryError, RecordingError
from monitor.io.dicom import Geometry
from monitor.messages import MessageError, Result, decode, encode
from monitor.pipeline import Endpoints
from monitor.recordings import bundled_recordings
from tests.conftest import monitor_cli

GEOMETRY_TAGS = (
    "ImagerPixelSpacing",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "EstimatedRadiographicMagnificationFactor",
)


def _posterior_leak():
    return next(r for r in bundled_recordings() if r.name == "posterior-leak")


def _edited_copy(folder, edit) -> tuple:
    """The bundled posterior-leak recording written again with its header edited."""
    folder.mkdir(parents=True, exist_ok=True)
    rec = _posterior_leak()
    out = []
    for plane, path in (("lateral", rec.lateral), ("ap", rec.ap)):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(folder / f"{plane}.dcm")
        out.append(folder / f"{plane}.dcm")
    return tuple(out)


def _without_geometry(ds) -> None:
    for tag in GEOMETRY_TAGS:
        if tag in ds:
            delattr(ds, tag)


def _swapped_distances(ds) -> None:
    ds.DistanceSourceToDetector, ds.DistanceSourceToPatient = (
        ds.DistanceSourceToPatient,
        ds.DistanceSourceToDetector,
    )


@pytest.mark.parametrize(
    "edit, named",
    [
        (_without_geometry, "ImagerPixelSpacing (0018,1164)"),
        (_swapped_distances, "DistanceSourceToPatient (0018,1111) 1000 mm is not less than"),
    ],
)
def test_a_recording_without_a_trustworthy_scale_is_refused_naming_the_tag(tmp_path, edit, named):
    lateral, ap = _edited_copy(tmp_path / "rec", edit)
    private = Endpoints.private().args()
    done = monitor_cli("replay", "--lateral", lateral, "--ap", ap, "--headless", "--speed", "0", *private)
    assert done.returncode == 1, done.stderr
    assert named in done.stderr and "--calibration" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1  # one line


@pytest.mark.parametrize(
    "geometry, named",
    [
        (Geometry((1.5, 1.5), 1000.0, 750.0), "ImagerPixelSpacing (0018,1164) [1.5, 1.5] mm is outside"),
        (Geometry((0.15, 0.18), 1000.0, 750.0), "is not square"),
        (Geometry((math.nan, 0.15), 1000.0, 750.0), "is not a number"),
        (Geometry((0.15, 0.15), 750.0, 1000.0), "DistanceSourceToPatient (0018,1111) 1000 mm is not less"),
        (Geometry((0.15, 0.15), 1000.0, -750.0), "DistanceSourceToPatient (0018,1111) -750.0 is not"),
        (Geometry((0.15, 0.15), estimated_magnification=0.5), "magnification 0.5 from Estimated"),
        (Geometry((0.15, 0.15), 1000.0, 300.0), "magnification 3.33 from DistanceSourceToDetector"),
    ],
)
def test_geometry_no_c_arm_could_have_is_refused_naming_the_tag(geometry, named):
    with pytest.raises(ImplausibleGeometryError) as refused:
        geometry.spacing_at_vertebra_mm()
    assert named in str(refused.value) and "--calibration" in str(refused.value)
    assert isinstance(refused.value, MissingGeometryError)  # callers that fall back to pixels still do


def test_plausible_geometry_gives_millimetres():
    assert Geometry((0.15, 0.15), 1000.0, 750.0).spacing_at_vertebra_mm() == pytest.approx((0.1125, 0.1125))
    assert Geometry((0.3, 0.3), estimated_magnification=1.5).spacing_at_vertebra_mm() == pytest.approx(
        (0.2, 0.2)
    )


def test_an_unmeasured_session_is_not_monitored_wherever_it_is_read(tmp_path):
    """Recorded on purpose without a scale (--unmeasured): the run, the audit (text, JSON,
    HTML, exit status) and the summary all say NOT MONITORED, never a clean session."""
    lateral, ap = _edited_copy(tmp_path / "rec", _without_geometry)
    session = tmp_path / "sessions" / "s"
    run = monitor_cli(
        "replay", "--lateral", lateral, "--ap", ap, "--headless", "--speed", "0", "--unmeasured",
        "--level", "L1", "--operator", "Dr Quinn", "--session", session, *Endpoints.private().args(),
    )  # fmt: skip
    assert run.returncode == 4, run.stderr
    assert "NOT MONITORED: level L1: lateral: the 5 mm rule evaluated on 0 of 46 frames" in run.stderr

    audit = monitor_cli("audit", session, "--json")
    assert audit.returncode == 4, audit.stderr
    report = json.loads(audit.stdout)
    assert report["complete"] and report["monitored"] is False
    (level,) = report["levels"]
    assert level["alarms"] == [] and level["monitoring"]["monitored"] is False
    assert level["monitoring"]["planes"] == {
        "lateral": {"frames": 46, "proximity": 0.0, "leak": 0.0, "max_unchecked_s": 6.0},
        "ap": {"frames": 46, "leak": 0.0},
    }
    text = monitor_cli("audit", session, "--html", tmp_path / "a.html")
    assert text.returncode == 4
    assert "NOT MONITORED: level L1: lateral: the 5 mm rule evaluated on 0 of 46 frames (0%)" in text.stdout
    assert "NOT MONITORED" in (tmp_path / "a.html").read_text()

    summary = monitor_cli("audit", tmp_path / "sessions", "--summary", "--json")
    assert summary.returncode == 4, summary.stderr  # as the session's own audit says it
    table = json.loads(summary.stdout)
    (missed,) = table["not_monitored"]
    assert missed["level"] == "L1" and missed["folder"].endswith("sessions/s")
    (row,) = table["rows"]
    assert row["not_monitored"] == 1 and row["sessions"] == 1
    lines = monitor_cli("audit", tmp_path / "sessions", "--summary").stdout.splitlines()
    assert lines[0].startswith("NOT MONITORED: ") and "sessions/s level L1" in lines[0]


def _result(**fields) -> Result:
    return Result("t", "lateral", 1, 1, 0.1, 0.0, 0.2, "ok", **fields)


def test_the_checks_travel_on_the_wire_and_nonsense_is_refused():
    assert decode(encode(_result(checks=["proximity", "leak"]))).checks == ["proximity", "leak"]
    assert decode(encode(_result(checks=["leak-apart"]))).checks == ["leak-apart"]
    assert decode(encode(_result())).checks is None  # an analyzer that does not say
    topic, body = encode(_result(checks=["proximity"]))
    for bad in (["everything"], "proximity", ["leak"] * 4, [1]):
        raw = json.loads(body)
        raw["checks"] = bad
        with pytest.raises(MessageError, match="checks"):
            decode([topic, json.dumps(raw).encode()])


def test_the_volumes_darkness_weight_travels_on_the_wire_and_nonsense_is_refused():
    """How much of the volume is the darkness's (biplane.darkness_weight) is a number from 0 to
    1 on the wire, absent from an analyzer that does not say; anything else is refused naming it."""
    assert decode(encode(_result(volume_ml=2.0, volume_darkness_weight=0.4))).volume_darkness_weight == 0.4
    assert decode(encode(_result(volume_ml=2.0))).volume_darkness_weight is None
    topic, body = encode(_result(volume_ml=2.0, volume_darkness_weight=0.4))
    for bad in ("half", -0.2, 5):
        raw = json.loads(body)
        raw["volume_darkness_weight"] = bad
        with pytest.raises(MessageError, match="volume_darkness_weight"):
            decode([topic, json.dumps(raw).encode()])


def test_caveats_travel_typed_and_unknown_codes_are_refused():
    """Programs read a result's caveats by code (the viewer's UNCALIBRATED, the audit's
    rows, a restarted analyzer's missing scatter); ``status`` is only their text."""
    from monitor.analyzer import result_for
    from monitor.messages import FrameHeader
    from monitor.vision.caveats import Caveat, CaveatCode

    h = FrameHeader("t", "ap", 3, 3, 0.4, 0.0, (8, 8), "uint16", "MONOCHROME2", 12)
    caveats = (
        Caveat(CaveatCode.NO_ANATOMY, "no vertebral body (cement hides it)"),  # ':' and '(' in a detail
        Caveat(CaveatCode.SCATTER_NOT_SEEN, "no halo; volumes without scatter correction"),
    )
    sent = result_for(h, caveats)
    got = decode(encode(sent))
    assert got.caveat_codes() == {CaveatCode.NO_ANATOMY, CaveatCode.SCATTER_NOT_SEEN}
    assert got.status == "no-anatomy: no vertebral body (cement hides it); scatter-not-seen: no halo;" \
        " volumes without scatter correction"  # fmt: skip
    assert decode(encode(result_for(h))).status == "ok" and decode(encode(_result())).caveats is None
    topic, body = encode(sent)
    for bad in ([{"code": "all-fine", "detail": ""}], [{"code": "no-anatomy"}], ["no-anatomy"], {"a": 1}):
        raw = json.loads(body)
        raw["caveats"] = bad
        with pytest.raises(MessageError, match="caveat"):
            decode([topic, json.dumps(raw).encode()])


@pytest.mark.parametrize("declared", [24, 2_000_000_000])
def test_a_frame_count_the_pixel_data_does_not_hold_is_refused(tmp_path, declared):
    """Data longer than NumberOfFrames declares replayed half the case and missed the leak;
    NumberOfFrames 2e9 drove a replay to 24 GB. Both are refused at open, from the file's
    structure, before anything is allocated for them."""
    from monitor.io.dicom import open_recording

    def claim(ds):
        ds.NumberOfFrames = declared

    lateral, _ = _edited_copy(tmp_path, claim)
    with pytest.raises(RecordingError, match=r"NumberOfFrames \(0028,0008\)") as refused:
        open_recording(lateral)
    said = "holds 48 frames" if declared == 24 else "holds 48 of the 2000000000 frames"
    assert said in str(refused.value)


def test_native_pixel_data_longer_than_declared_is_refused(tmp_path):
    from monitor.io.dicom import WriteOptions, open_recording, write_recording

    frames = np.random.default_rng(0).integers(0, 4096, (6, 64, 64)).astype(np.uint16)
    opts = WriteOptions("lateral", Geometry((0.15, 0.15), 1000.0, 750.0), 100.0, 12)
    write_recording(tmp_path / "native.dcm", frames, opts)
    assert len(open_recording(tmp_path / "native.dcm")) == 6
    ds = pydicom.dcmread(tmp_path / "native.dcm")
    ds.NumberOfFrames = 3
    ds.save_as(tmp_path / "short.dcm")
    with pytest.raises(RecordingError, match="holds 6 frames but NumberOfFrames"):
        open_recording(tmp_path / "short.dcm")


def test_a_lateral_view_that_stops_while_the_ap_goes_on_is_not_monitored(tmp_path):
    """The 5 mm rule lives in the lateral view: its last 30 frames missing (a stalled feed)
    leave 16 of 16 lateral frames checked, a share of 100 %, and 4 s unwatched."""
    from monitor.io.sources import DicomPairSource
    from monitor.pipeline import RunSpec, run
    from monitor.replay import PaceOptions

    class LateralStalls(DicomPairSource):
        def frames(self):
            return (f for f in super().frames() if f.plane == "ap" or f.index < 18)

    rec = _posterior_leak()
    source = LateralStalls(rec.lateral, rec.ap)
    spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 4
    source.close()
    report = json.loads(monitor_cli("audit", tmp_path / "s", "--json").stdout)
    (level,) = report["levels"]
    m = level["monitoring"]
    assert m["planes"]["lateral"]["proximity"] == 1.0 and m["planes"]["lateral"]["max_unchecked_s"] == 4.0
    assert m["reasons"] == ["lateral: no frame checked against the 5 mm rule for 4.0 s"]
    assert report["monitored"] is False
