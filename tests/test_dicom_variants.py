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


class Frames:
    """A source of the frames given, with a source's formats."""

    def __init__(self, formats: dict, items: list):
        self.formats, self.items = formats, items

    def frames(self):
        yield from self.items


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

    # and clipping is judged on that range: a frame 85 % at the values' top is saturated (on the
    # declared 65,535 it was measured as any other, review of session 72)
    from dataclasses import replace

    from monitor.vision.caveats import CaveatCode

    source = DicomPairSource(pair[0], None)
    try:
        first = [item for item, _ in zip(source.frames(), range(5), strict=False)]
    finally:
        source.close()
    white = first[4].pixels.copy()
    white[: int(0.85 * white.shape[0])] = 255
    analysis = VisionAnalysis()
    results = [
        r
        for _, r in analyse_source(
            Frames(source.formats, [*first[:4], replace(first[4], pixels=white)]), analysis
        )
    ]
    assert analysis.case.planes["lateral"].bits_stored == 8
    assert CaveatCode.SATURATED_FRAME in results[-1].caveat_codes(), results[-1].caveats
    assert CaveatCode.SATURATED_FRAME not in results[-2].caveat_codes()


@pytest.mark.parametrize("how", ["signed", "big-endian", "rescaled"])
def test_signed_big_endian_and_rescaled_frames_reach_the_wire_as_the_original(tmp_path, how):
    """Signed data (PixelRepresentation 1), explicit VR big endian and an intercept that the
    Modality LUT undoes reached the wire as stored and stopped the replay mid-stream ("aborted:
    'int16'", "'>u2'"), or were read without the rescale that makes a LIN image's values
    proportional to the intensity. Each source frame is now the original's values, unsigned in
    this machine's byte order, and goes on the wire."""
    from pydicom.uid import ExplicitVRBigEndian

    from monitor.messages import decode, encode_frame
    from monitor.replay import frame_header

    def edit(ds, frames):
        ds.BitsStored, ds.HighBit = 16, 15
        if how == "signed":
            ds.PixelRepresentation = 1
            return frames.astype(np.int16)
        if how == "rescaled":  # stored = value - 1000, the intercept puts it back
            ds.RescaleIntercept, ds.RescaleSlope = "1000", "1"
            ds.PixelRepresentation = 1
            return frames.astype(np.int16) - 1000
        return frames.astype(np.uint16)

    path = rewrite(CASE.lateral, tmp_path / "lateral.dcm", edit)
    if how == "big-endian":
        ds = pydicom.dcmread(path)
        ds.PixelData = ds.pixel_array.astype(">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        pydicom.dcmwrite(path, ds, little_endian=False, implicit_vr=False, force_encoding=True)
    variant, plain = DicomPairSource(path, None), DicomPairSource(CASE.lateral, None)
    try:
        pairs = list(zip(variant.frames(), plain.frames(), strict=True))
        for ours, theirs in pairs[:5]:
            assert ours.pixels.dtype.kind == "u" and ours.pixels.dtype.isnative, ours.pixels.dtype
            assert np.array_equal(ours.pixels, theirs.pixels)
            header = frame_header("s", ours, 0, variant.formats["lateral"])
            topic, head, payload = encode_frame(header, ours.pixels)  # the payload as sent: the array
            _sent, pixels = decode([topic, head, payload.tobytes()])
            assert np.array_equal(pixels, theirs.pixels)
    finally:
        variant.close()
        plain.close()
    assert len(pairs) == 48


def test_negative_values_are_refused_naming_the_frame(tmp_path):
    """Signed values that stay negative (no intercept to undo them) are no detector's reading:
    refused with the frame named, not read as a garbled image."""
    from monitor.errors import RecordingError
    from monitor.io.dicom import open_recording

    def edit(ds, frames):
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 1
        return frames.astype(np.int16) - 1000

    path = rewrite(CASE.lateral, tmp_path / "lateral.dcm", edit)
    with (
        open_recording(path) as rec,
        pytest.raises(
            RecordingError,
            match="frame 0 holds values -[0-9]+ to -[0-9]+: the monitor reads values of 0-65535",
        ),
    ):
        rec.frame(0)


def test_the_intensity_sign_decides_which_way_values_run(tmp_path, original):
    """A MONOCHROME2 image whose values fall with the intensity (PixelIntensityRelationshipSign
    -1: an inverted LOG image) was read by its photometric, its cement as bone taken away: the
    leak missed and a false venous alarm. The sign decides now; the display follows it."""
    from monitor.io.dicom import describe_recording

    def inverted(ds, frames):
        ds.PixelIntensityRelationshipSign = -1
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        return (255 - frames).astype(np.uint8)

    pair = [rewrite(getattr(CASE, p), tmp_path / f"{p}.dcm", inverted) for p in ("lateral", "ap")]
    assert alarms_of(*pair) == original
    assert "sign -1 (higher values read as less intensity, as MONOCHROME1)" in describe_recording(pair[0])


def test_what_the_files_do_not_say_is_said_at_the_start_and_in_the_audit(tmp_path):
    """Files with no PositionerPrimaryAngle and no PixelIntensityRelationship, given swapped
    (the AP as --lateral): the monitor takes the command line's word, as it must, but said
    nothing, and analysed the AP as the lateral view (an independent test: a false high
    paravertebral alarm, the real posterior leak missed). Each assumption is now said when the
    run starts and kept in the session log, where the audit (text, JSON, HTML) lists it."""
    from monitor.audit import audit_json, text_report
    from monitor.io.store import SessionStore
    from monitor.report import html_report
    from tests.conftest import monitor_cli

    def untagged(ds, frames):
        for keyword in ("PositionerPrimaryAngle", "PositionerSecondaryAngle", "PixelIntensityRelationship"):
            if keyword in ds:
                delattr(ds, keyword)
        return frames

    lateral = rewrite(CASE.lateral, tmp_path / "lateral.dcm", untagged)
    ap = rewrite(CASE.ap, tmp_path / "ap.dcm", untagged)
    session = tmp_path / "s"
    done = monitor_cli(
        *("replay", "--lateral", ap, "--ap", lateral, "--headless", "--speed", "0", "--session", session),
        *("--level", "L1", "--operator", "test"),
    )
    assert "warning: ap.dcm: taken as the lateral view because it was given as --lateral" in done.stderr
    assert "check the files are not swapped" in done.stderr, done.stderr
    store = SessionStore.open(session)
    try:
        report = audit_json(store)
        html = html_report(store, report)
    finally:
        store.close()
    warned = report["source_warnings"]
    assert len(warned) == 4, warned  # each file: its plane, its intensity relationship
    assert sum("taken as the lateral view" in w for w in warned) == 1
    assert sum("read as LOG" in w for w in warned) == 2
    text = text_report(report)
    assert text.count("SOURCE WARNING: ") == 4
    assert "The recording did not say, and the monitor assumed" in html


def test_a_frame_rate_no_fluoroscopy_has_is_refused_and_fps_over_the_files_said(tmp_path):
    """FrameTime is in milliseconds: one written in seconds (0.133) read as 7,500 frames/s and
    was replayed so, silently; --fps replaced the file's own timing silently too."""
    from monitor.errors import RecordingError

    def seconds(ds, frames):
        ds.FrameTime = f"{float(ds.FrameTime) / 1000:.6f}"
        return frames

    path = rewrite(CASE.lateral, tmp_path / "lateral.dcm", seconds)
    with pytest.raises(RecordingError, match=r"7500 frames/s from its FrameTime is no fluoroscopy's"):
        DicomPairSource(path, None)
    given = DicomPairSource(path, None, fps=7.5)
    given.close()
    assert given.warnings == ["lateral.dcm: --fps 7.5 replaces its FrameTime (7500 frames/s)"]
    plain = DicomPairSource(CASE.lateral, CASE.ap)
    plain.close()
    assert plain.warnings == []  # the bundled files say all of it


def test_an_enhanced_xa_object_without_the_tags_anywhere_says_where_they_were_looked_for(tmp_path):
    """An Enhanced XA object was refused for "missing ImagerPixelSpacing" as though the file had
    none, where such objects keep it in functional groups (session 72). They are read now; one
    that has the tags in neither place says it looked in both."""
    from monitor.errors import MonitorError
    from tests.conftest import monitor_cli

    def enhanced(ds, frames):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.12.1.1"
        for keyword in ("ImagerPixelSpacing", "FrameTime", "CineRate", "RecommendedDisplayFrameRate"):
            if keyword in ds:
                delattr(ds, keyword)
        del ds.PositionerPrimaryAngle
        return frames

    path = rewrite(CASE.lateral, tmp_path / "lateral.dcm", enhanced)
    source = DicomPairSource(path, None)
    source.close()
    note = "not at its top level, nor in its functional groups, where Enhanced XA/XRF objects keep it"
    assert note in source.scale_problems["lateral"]
    with pytest.raises(MonitorError, match=note):
        source.recordings["lateral"].info.require_frame_times()
    done = monitor_cli("replay", "--lateral", path, "--headless", "--fps", "7.5")
    assert done.returncode != 0 and "Enhanced XA/XRF object" in done.stderr, done.stderr
    assert "missing ImagerPixelSpacing" in done.stderr


ENHANCED_XA = "1.2.840.10008.5.1.4.1.1.12.1.1"


def to_enhanced(
    ds: pydicom.Dataset,
    frame_seconds: list[float | str | None] | None = None,
    per_frame: Callable[[int, pydicom.Dataset], None] | None = None,
) -> None:
    """``ds``, a classic XA header, re-laid in place as Enhanced XA Image Storage (PS3.3 A.47)
    as a C-arm exporting it writes it: the scale and intensity relationship in the Frame Pixel
    Data Properties macro, the distances in the X-Ray Geometry macro (the isocentre for XA's
    DistanceSourceToPatient), the angles in the X-Ray Positioner macro, all shared; each frame's
    acquisition time in its Frame Content macro (``frame_seconds`` after AcquisitionDateTime; a
    None leaves that frame's stamp out, a str is written as it is; default: FrameTime apart);
    none of them at the top level,
    and no FrameTime, CineRate or magnification factor. ``per_frame(i, item)`` may add to frame
    i's functional groups."""
    from pydicom.dataset import Dataset

    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_XA

    def item(**attributes) -> Dataset:
        d = Dataset()
        for keyword, value in attributes.items():
            setattr(d, keyword, value)
        return d

    shared = item(
        FramePixelDataPropertiesSequence=[
            item(
                FrameType=list(ds.ImageType),
                PixelIntensityRelationship=ds.PixelIntensityRelationship,
                PixelIntensityRelationshipSign=ds.PixelIntensityRelationshipSign,
                ImagerPixelSpacing=list(ds.ImagerPixelSpacing),
                GeometricalProperties="UNIFORM",
                ImageProcessingApplied="NONE",
            )
        ],
        XRayGeometrySequence=[
            item(
                DistanceSourceToIsocenter=float(ds.DistanceSourceToPatient),
                DistanceSourceToDetector=float(ds.DistanceSourceToDetector),
            )
        ],
        PositionerPositionSequence=[
            item(
                PositionerPrimaryAngle=ds.PositionerPrimaryAngle,
                PositionerSecondaryAngle=ds.PositionerSecondaryAngle,
            )
        ],
    )
    import datetime as dt

    start = dt.datetime.strptime(str(ds.AcquisitionDateTime), "%Y%m%d%H%M%S.%f")
    step = float(ds.FrameTime) / 1000.0
    n = int(ds.NumberOfFrames)
    times = frame_seconds if frame_seconds is not None else [i * step for i in range(n)]
    frames = []
    for i, seconds in enumerate(times):
        content = item(FrameAcquisitionNumber=i + 1)
        if isinstance(seconds, str):
            content.FrameAcquisitionDateTime = seconds
        elif seconds is not None:
            content.FrameAcquisitionDateTime = (start + dt.timedelta(seconds=seconds)).strftime(
                "%Y%m%d%H%M%S.%f"
            )
        frames.append(item(FrameContentSequence=[content]))
        if per_frame is not None:
            per_frame(i, frames[-1])
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PerFrameFunctionalGroupsSequence = frames
    for keyword in (
        "PixelIntensityRelationship",
        "PixelIntensityRelationshipSign",
        "ImagerPixelSpacing",
        "DistanceSourceToPatient",
        "DistanceSourceToDetector",
        "EstimatedRadiographicMagnificationFactor",
        "PositionerPrimaryAngle",
        "PositionerSecondaryAngle",
        "FrameTime",
        "FrameIncrementPointer",
        "CineRate",
        "RecommendedDisplayFrameRate",
    ):
        delattr(ds, keyword)


def test_an_enhanced_xa_run_reads_as_the_same_run_in_xa(tmp_path, original):
    """Enhanced XA (what newer C-arms export) keeps the scale, distances, angles, intensity
    relationship and frame times in functional groups, where the monitor did not look: such a
    run was refused for want of a scale, or with --fps and a calibration given, analysed without
    the file's own numbers. Read from there, the bundled posterior-leak case laid out as
    Enhanced XA opens as the same run and raises the same alarms, frame for frame."""
    from monitor.io.dicom import describe_recording, open_recording

    def enhanced(ds, frames):
        to_enhanced(ds)
        return frames

    pair = [rewrite(getattr(CASE, p), tmp_path / f"{p}.dcm", enhanced) for p in ("lateral", "ap")]
    header = pydicom.dcmread(pair[0], stop_before_pixels=True)
    assert header.SOPClassUID == ENHANCED_XA and "ImagerPixelSpacing" not in header
    assert "FrameTime" not in header and "PositionerPrimaryAngle" not in header
    for plane, path in zip(("lateral", "ap"), pair, strict=True):
        with open_recording(getattr(CASE, plane)) as classic, open_recording(path) as laid_out:
            a, b = classic.info, laid_out.info
            assert b.functional_groups and not a.functional_groups
            assert b.plane == a.plane == plane
            assert (b.primary_angle_deg, b.secondary_angle_deg) == (
                a.primary_angle_deg,
                a.secondary_angle_deg,
            )
            assert (b.intensity_relationship, b.intensity_sign) == (
                a.intensity_relationship,
                a.intensity_sign,
            )
            assert b.geometry.imager_pixel_spacing_mm == a.geometry.imager_pixel_spacing_mm
            assert b.geometry.source_to_patient_mm == a.geometry.source_to_patient_mm == 750.0
            assert b.geometry.estimated_magnification is None  # no such tag in Enhanced XA
            assert b.spacing_at_vertebra_mm() == pytest.approx(a.spacing_at_vertebra_mm(), rel=1e-6)
            assert b.timing_source == "FrameAcquisitionDateTime of each frame"
            assert np.allclose(b.frame_times_s, a.frame_times_s, atol=1e-6)
            assert b.header_notes == ()
    source = DicomPairSource(*pair)
    source.close()
    assert source.warnings == [] and source.scale_problems == {}
    assert alarms_of(*pair) == original
    said = describe_recording(pair[0])
    assert "7.50 frames/s from FrameAcquisitionDateTime of each frame" in said, said
    assert "(functional groups read too)" in said and "mm/pixel at the vertebra" in said


def test_an_enhanced_runs_own_frame_times_keep_its_pause_and_place_a_bad_stamp(tmp_path):
    """Each frame's FrameAcquisitionDateTime is its time: a 1 s pause after frame 20 is kept
    (a nominal rate would put frame 21 133 ms after frame 20, and read the cement that grew
    meanwhile as a jump). A stamp missing, an hour out (a typo) or earlier than the frame
    before is placed between its neighbours, and said, and moves no other frame (a first
    version gave the frames after it the bad step: an hour's typo put the rest of the run an
    hour on, review of session 74). A stamp on a whole second written without its fraction (as
    pydicom's DT does) is as good as the others."""
    from monitor.io.dicom import open_recording

    step = 0.1333333
    true = [i * step + (1.0 if i > 20 else 0.0) for i in range(48)]
    seconds: list = list(true)
    seconds[0] = "20260105090000"  # the run's first stamp, 09:00:00 to the second
    seconds[5] = None
    seconds[10] += 3600.0
    seconds[30] -= 0.5
    seconds[47] += 3600.0  # the last an hour late: it rises with the rest, and is still a typo

    def enhanced(ds, frames):
        to_enhanced(ds, frame_seconds=seconds)
        return frames

    path = rewrite(CASE.lateral, tmp_path / "lateral.dcm", enhanced)
    with open_recording(path) as rec:
        times = rec.info.frame_times_s
        assert times == pytest.approx(true, abs=1e-5)  # the pause kept, each bad stamp placed
        assert "the stamp of frame 5, 10, 30, 47 missing or out of order" in rec.info.timing_source
    source = DicomPairSource(path, None)
    source.close()
    assert any("FrameAcquisitionDateTime of each frame" in w for w in source.warnings), source.warnings

    # a pause of seconds before the last frame is the run's own, not a typo (a third review: a
    # 12 s pause, 90 usual steps, was read as one)
    paused = [i * step + (12.0 if i == 47 else 0.0) for i in range(48)]

    def slow_end(ds, frames):
        to_enhanced(ds, frame_seconds=paused)
        return frames

    with open_recording(rewrite(CASE.lateral, tmp_path / "paused.dcm", slow_end)) as rec:
        assert rec.info.frame_times_s == pytest.approx(paused, abs=1e-5)
        assert rec.info.timing_source == "FrameAcquisitionDateTime of each frame"


def test_an_enhanced_run_whose_frames_differ_is_refused_or_said(tmp_path):
    """Per-frame functional groups may differ from frame to frame: a run whose scale changes
    partway (a zoom) cannot be read with one scale and is refused naming the attribute; angles
    that wander (the C-arm moved) are read as the first frame's, and said at the start."""
    import copy

    from monitor.errors import RecordingError

    def zoomed(ds, frames):
        spacing = list(ds.ImagerPixelSpacing)
        to_enhanced(ds)
        props = ds.SharedFunctionalGroupsSequence[0].FramePixelDataPropertiesSequence
        del ds.SharedFunctionalGroupsSequence[0].FramePixelDataPropertiesSequence
        for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
            own = copy.deepcopy(props[0])
            own.ImagerPixelSpacing = spacing if i < 30 else [spacing[0] * 0.75, spacing[1] * 0.75]
            frame.FramePixelDataPropertiesSequence = [own]
        return frames

    path = rewrite(CASE.lateral, tmp_path / "zoomed.dcm", zoomed)
    with pytest.raises(RecordingError, match=r"its frames differ in ImagerPixelSpacing"):
        DicomPairSource(path, None)

    def turning(ds, frames):
        to_enhanced(ds)
        del ds.SharedFunctionalGroupsSequence[0].PositionerPositionSequence
        for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
            position = pydicom.Dataset()
            position.PositionerPrimaryAngle = 90.0 - (4.0 if i >= 40 else 0.1 * (i % 2))
            position.PositionerSecondaryAngle = 0.0
            frame.PositionerPositionSequence = [position]
        return frames

    path = rewrite(CASE.lateral, tmp_path / "turning.dcm", turning)
    source = DicomPairSource(path, None)
    source.close()
    assert source.recordings["lateral"].info.primary_angle_deg == 90.0
    assert source.warnings == [
        "turning.dcm: its frames differ in PositionerPrimaryAngle (86 to 90), in their functional"
        " groups: the first frame's 90.0 is used for the whole run"
    ], source.warnings

    def per_frame_geometry(sid_from_24: float, spacing_jitter: float):
        def edit(ds, frames):
            spacing = [float(v) for v in ds.ImagerPixelSpacing]
            to_enhanced(ds)
            shared = ds.SharedFunctionalGroupsSequence[0]
            geometry, props = shared.XRayGeometrySequence[0], shared.FramePixelDataPropertiesSequence[0]
            del shared.XRayGeometrySequence, shared.FramePixelDataPropertiesSequence
            for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
                own, pixel = copy.deepcopy(geometry), copy.deepcopy(props)
                if i >= 24:
                    own.DistanceSourceToDetector = sid_from_24
                pixel.ImagerPixelSpacing = [v * (1 + spacing_jitter * (i % 2)) for v in spacing]
                frame.XRayGeometrySequence, frame.FramePixelDataPropertiesSequence = [own], [pixel]
            return frames

        return edit

    # the detector moved partway: 20 % off in millimetres after it, refused as a zoom is
    path = rewrite(CASE.lateral, tmp_path / "sid.dcm", per_frame_geometry(1200.0, 0.0))
    with pytest.raises(RecordingError, match=r"its frames differ in DistanceSourceToDetector"):
        DicomPairSource(path, None)

    # stamps that cannot time the run are said to be there, not only "no timing" (review)
    def coarse(ds, frames):
        to_enhanced(ds, frame_seconds=[f"2026010509{i // 60:02d}{i % 60:02d}" for i in range(48)])
        return frames

    from monitor.io.dicom import open_recording

    with open_recording(rewrite(CASE.lateral, tmp_path / "coarse.dcm", coarse)) as rec:
        assert rec.info.frame_times_s is None
        assert rec.info.header_notes == (
            "its frames' own acquisition stamps (Frame Content) do not time it: coarser than 10 ms,"
            " fewer than half of them in order, or not one a frame",
        )
    # a DS value's rounding from frame to frame is no zoom
    path = rewrite(CASE.lateral, tmp_path / "jitter.dcm", per_frame_geometry(1000.0, 1e-6))
    source = DicomPairSource(path, None)
    source.close()
    assert source.warnings == [] and source.scale_problems == {}


@pytest.mark.parametrize(
    ("macro", "keyword", "value", "said"),
    [
        ("XRayGeometrySequence", "DistanceSourceToIsocenter", float("nan"), "is not a number"),
        ("XRayGeometrySequence", "DistanceSourceToDetector", "1000mm", "is not a number"),
        ("FramePixelDataPropertiesSequence", "PixelIntensityRelationshipSign", 2, "is not +1 or -1"),
        ("FramePixelDataPropertiesSequence", "ImagerPixelSpacing", [0.4], "is not 2 numbers"),
    ],
)
def test_a_value_in_the_functional_groups_that_is_no_number_is_refused_in_one_line(
    tmp_path, macro, keyword, value, said
):
    """NaN in an FL, a word in a DS, one value where DICOM requires two, a sign of 2: refused
    naming the tag and where it was, never a traceback (review of session 74: `monitor info`
    printed one). An angle that is no number is not read, as at the top level (no plane from it)."""
    from tests.conftest import monitor_cli

    def edit(ds, frames):
        to_enhanced(ds)
        item = ds.SharedFunctionalGroupsSequence[0][macro].value[0]
        if isinstance(value, str):  # a DS value pydicom would refuse to set: written raw
            item[keyword] = pydicom.DataElement(item[keyword].tag, "DS", value, already_converted=True)
        else:
            setattr(item, keyword, value)
        return frames

    path = rewrite(CASE.lateral, tmp_path / "bad.dcm", edit)
    done = monitor_cli("info", path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert f"{keyword}" in done.stderr and said in done.stderr and macro in done.stderr, done.stderr


def test_a_deflated_recording_is_inflated_once_and_reads_as_the_original(tmp_path):
    """Deflate compresses the whole dataset: each frame re-read and re-inflated the whole file
    (0.34 s a frame at 1024 x 1024 x 48, quadratic in the frames). It is now inflated once into
    a temporary file with no name, gone when the recording closes or the process dies."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from monitor.io.dicom import open_recording

    ds = pydicom.dcmread(CASE.lateral)
    frames = ds.pixel_array
    ds.PixelData = frames.tobytes()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    import tempfile

    rec = open_recording(tmp_path / "deflated.dcm")
    with rec:
        streamed = rec.frames()
        assert np.array_equal(next(streamed), frames[0])
        # by index while a stream reads on: each with its own offset in the one inflated copy
        assert np.array_equal(rec.frame(47), frames[47]) and np.array_equal(rec.frame(3), frames[3])
        assert np.array_equal(np.stack(list(streamed)), frames[1:])
        assert rec._inflated is not None  # inflated once, and nameless: nothing left if killed
        assert not list(Path(tempfile.gettempdir()).glob("monitor-inflated-*"))
    assert rec._inflated is None


def test_a_frame_time_vector_with_a_zero_step_keeps_its_pause(tmp_path):
    """A FrameTimeVector with one step of 0 was dropped whole for the nominal FrameTime, hiding a
    1 s pause elsewhere in it: the step is now taken as the usual one, the pause kept, and the
    run says so."""
    from monitor.io.dicom import open_recording

    def paused(ds, frames):
        steps = [0.0] + [float(ds.FrameTime)] * (len(frames) - 1)
        steps[10], steps[20] = 0.0, 1000.0  # a step that is no time; a 1 s pause
        ds.FrameTimeVector = [f"{v:g}" for v in steps]
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTimeVector")
        return frames

    path = rewrite(CASE.lateral, tmp_path / "lateral.dcm", paused)
    with open_recording(path) as rec:
        times = rec.info.frame_times_s
        assert "its step to frame 10 not a time" in rec.info.timing_source
    step = times[2] - times[1]
    assert times[10] - times[9] == pytest.approx(step) and times[20] - times[19] == pytest.approx(1.0)
    source = DicomPairSource(path, None)
    source.close()
    assert source.warnings == [f"lateral.dcm: timing from its {rec.info.timing_source}"]


def test_a_file_meta_without_its_transfer_syntax_is_refused_when_opened(tmp_path):
    """`monitor info` read it, and the replay stopped at frame 0 with pydicom's own words."""
    from monitor.errors import RecordingError
    from monitor.io.dicom import open_recording

    ds = pydicom.dcmread(CASE.lateral)
    del ds.file_meta.TransferSyntaxUID
    pydicom.dcmwrite(tmp_path / "lateral.dcm", ds, implicit_vr=False, little_endian=True)
    with pytest.raises(RecordingError, match=r"no TransferSyntaxUID \(0002,0010\) in its file meta"):
        open_recording(tmp_path / "lateral.dcm")


def test_values_not_in_the_low_bits_are_refused_and_a_rescaled_stream_keeps_one_type(tmp_path):
    """HighBit 15 with BitsStored 10 (values in the high bits) was masked into garbage and read
    NOT MONITORED with no word why: refused at opening. An 8-bit stream with a rescale gave uint8
    and uint16 frames in one stream, and its export failed: every frame is uint16 now."""
    from monitor.errors import RecordingError
    from monitor.io.dicom import open_recording

    def high_bits(ds, frames):
        ds.BitsStored, ds.HighBit = 10, 15
        return frames.astype(np.uint16) << 6

    path = rewrite(CASE.lateral, tmp_path / "high.dcm", high_bits)
    with pytest.raises(RecordingError, match=r"HighBit \(0028,0102\) 15 with BitsStored 10"):
        open_recording(path)

    def rescaled(ds, frames):
        ds.RescaleSlope, ds.RescaleIntercept = "1", "0.25"
        return frames

    path = rewrite(CASE.lateral, tmp_path / "rescaled.dcm", rescaled)
    with open_recording(path) as rec:
        types = {frame.dtype for frame in rec.frames()}
    assert types == {np.dtype(np.uint16)}


def test_runs_begun_apart_are_paired_on_their_clock_through_the_log_and_its_export(tmp_path):
    """A lateral and an AP run whose headers say they began 0.8 s apart: the views were paired
    from their first frames, each AP frame read beside a lateral one 0.8 s older (the AP backs a
    lateral leak only within a second or so of it). They are paired on the acquisition clock,
    that is said, the session log keeps it, and its export (de-identified too) reads back so."""
    import datetime

    from monitor.errors import RecordingError
    from monitor.io.store import SessionStore
    from tests.conftest import monitor_cli

    late = 6  # frames of 7.5 frames/s: the AP run begins 0.8 s after the lateral's

    def begun_later(ds, frames):
        started = datetime.datetime.strptime(ds.AcquisitionDateTime, "%Y%m%d%H%M%S.%f")
        later = started + datetime.timedelta(seconds=late / 7.5)
        ds.AcquisitionDateTime = later.strftime("%Y%m%d%H%M%S.%f")
        ds.NumberOfFrames = len(frames) - late
        return np.ascontiguousarray(frames[late:])

    ap = rewrite(CASE.ap, tmp_path / "ap.dcm", begun_later)
    source = DicomPairSource(CASE.lateral, ap)
    order = [(f.plane, f.index, round(f.acq_time, 6)) for f in source.frames()]
    source.close()
    assert source.start_offsets_s == {"lateral": 0.0, "ap": pytest.approx(0.8)}
    assert order[: late + 1] == [("lateral", i, round(i / 7.5, 6)) for i in range(late + 1)]
    assert order[late + 1] == ("ap", 0, 0.8)  # beside the lateral frame acquired with it
    assert source.warnings == [
        "ap.dcm: its ap run began 0.80 s after the lateral run (AcquisitionDateTime);"
        " the views are paired on that clock"
    ]
    # the other way round: the earlier run is the clock's zero whichever plane it is
    swapped = DicomPairSource(rewrite(CASE.lateral, tmp_path / "lat-late.dcm", begun_later), CASE.ap)
    swapped.close()
    assert swapped.start_offsets_s == {"lateral": pytest.approx(0.8), "ap": 0.0}

    session = tmp_path / "s"
    done = monitor_cli(
        *("replay", "--lateral", CASE.lateral, "--ap", ap, "--headless", "--speed", "0"),
        *("--session", session, "--level", "L1", "--operator", "test"),
    )
    assert done.returncode == 0, done.stderr
    assert "warning: ap.dcm: its ap run began 0.80 s after the lateral run" in done.stderr
    store = SessionStore.open(session)
    try:
        first_ap = min(r.body["acq_time"] for r in store.records("frame") if r.plane == "ap")
    finally:
        store.close()
    assert first_ap == pytest.approx(0.8)
    for how in ((), ("--deidentify",)):
        out = tmp_path / f"export{len(how)}"
        exported = monitor_cli("export", session, out, *how)
        assert exported.returncode == 0, exported.stderr
        again = DicomPairSource(out / "lateral.dcm", out / "ap.dcm")
        again.close()
        assert again.start_offsets_s["ap"] == pytest.approx(0.8, abs=1e-5), how
        if how:  # the day is no one's; the times within it are the runs'
            anon = pydicom.dcmread(out / "ap.dcm", stop_before_pixels=True)
            assert anon.AcquisitionDateTime.startswith("19000101000000.8")
            assert "113107" in [c.CodeValue for c in anon.DeidentificationMethodCodeSequence]
            assert anon.LongitudinalTemporalInformationModified == "MODIFIED"
            dated = [e.keyword for e in anon.iterall() if e.VR in ("DA", "DT", "TM") and e.value]
            assert dated == ["AcquisitionDateTime"]  # no other date or time of the session's

    # begun an hour and more apart: no two views of one injection
    def next_day(ds, frames):
        ds.AcquisitionDateTime = "20260106" + ds.AcquisitionDateTime[8:]
        return frames

    other_day = rewrite(CASE.ap, tmp_path / "ap-next-day.dcm", next_day)
    with pytest.raises(RecordingError, match=r"24 h 0 min apart: not two views of one injection"):
        DicomPairSource(CASE.lateral, other_day)

    # a run with no date and time: paired from the first frames, and said
    def undated(ds, frames):
        for keyword in ("AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "ContentDate"):
            delattr(ds, keyword)
        return frames

    bare = DicomPairSource(CASE.lateral, rewrite(CASE.ap, tmp_path / "ap-undated.dcm", undated))
    bare.close()
    assert bare.start_offsets_s == {"lateral": 0.0, "ap": 0.0}
    assert bare.warnings == [
        "ap-undated.dcm: no acquisition date and time (AcquisitionDateTime, or AcquisitionDate with"
        " AcquisitionTime, to the second): the lateral and AP runs are paired from their first"
        " frames, as if they began together"
    ]


def test_start_stamps_are_read_to_their_precision_and_paired_by_one_family_of_tags(tmp_path):
    """Real headers (an independent review, session 73): whole-second stamps of runs begun
    together read a second apart, and were paired 1 s apart as exact; one plane dated by its
    acquisition and the other by its content time (possibly when it was stored) were paired
    600 s apart; single-frame runs were said to have begun "0.00 s" apart; a zone given by
    TimezoneOffsetFromUTC was not read; and no flag paired runs whose clock was wrong."""
    import datetime

    from monitor.errors import RecordingError
    from monitor.io.dicom import run_starts
    from tests.conftest import monitor_cli

    def stamps(**tags):
        ds = pydicom.Dataset()
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        return [(s.family, s.tags, s.when, s.resolution_s) for s in run_starts(ds)]

    when = datetime.datetime(2026, 12, 7, 9, 0, 1)
    assert stamps(AcquisitionDate="20261207", AcquisitionTime="09:00:01") == [
        ("acquisition", "AcquisitionDate/AcquisitionTime", when, 1.0)
    ]
    zoned = stamps(AcquisitionDateTime="20261207090001.25", TimezoneOffsetFromUTC="-0500")
    assert zoned[0][2].utcoffset() == datetime.timedelta(hours=-5) and zoned[0][3] == 0.01
    assert stamps(AcquisitionDateTime="20261207090001+0130")[0][2].utcoffset().seconds == 5400
    # a minute's stamp, a month 13 or a leap second is no start; the content's family still is
    both = stamps(AcquisitionDateTime="202612070900", ContentDate="20261307", ContentTime="090001")
    assert both == []
    assert [
        s[0]
        for s in stamps(AcquisitionDateTime="20261207090060", ContentDate="20261207", ContentTime="090001")
    ] == ["content"]
    assert stamps(AcquisitionTime="090001") == []  # no date

    def dated(**tags):
        def edit(ds, frames):
            for keyword in (
                "AcquisitionDateTime",
                "AcquisitionDate",
                "AcquisitionTime",
                "ContentDate",
                "ContentTime",
            ):
                if keyword in ds:
                    delattr(ds, keyword)
            for keyword, value in tags.items():
                setattr(ds, keyword, value)
            return frames

        return edit

    def pair(lateral_tags, ap_tags, **options):
        lateral = rewrite(CASE.lateral, tmp_path / "lateral.dcm", dated(**lateral_tags))
        ap = rewrite(CASE.ap, tmp_path / "ap.dcm", dated(**ap_tags))
        source = DicomPairSource(lateral, ap, **options)
        source.close()
        return source.start_offsets_s, source.warnings

    def paired_at_first_frames(lateral_tags, ap_tags) -> str:
        """The one warning said of a pair paired from its first frames."""
        offsets, warned = pair(lateral_tags, ap_tags)
        assert offsets == {"lateral": 0.0, "ap": 0.0} and len(warned) == 1, (offsets, warned)
        return warned[0]

    # whole seconds, a second apart: as likely begun together; said, paired at the first frames
    assert paired_at_first_frames(
        {"AcquisitionDate": "20261207", "AcquisitionTime": "090000"},
        {"AcquisitionDate": "20261207", "AcquisitionTime": "090001"},
    ) == (
        "ap.dcm: its ap run's start reads 1 s after the lateral run's, which their"
        " AcquisitionDate/AcquisitionTime (to 1 s) cannot tell from none: the runs are paired from"
        " their first frames"
    )
    # ... 3 s apart: paired so, with the stamps' uncertainty said
    offsets, warned = pair(
        {"AcquisitionDate": "20261207", "AcquisitionTime": "090000"},
        {"AcquisitionDate": "20261207", "AcquisitionTime": "090003"},
    )
    assert offsets["ap"] == 3.0 and "began 3.00 s (+/- 1 s) after the lateral run" in warned[0]
    # one by its acquisition, the other by its content time only: not paired on them
    assert paired_at_first_frames(
        {"AcquisitionDateTime": "20261207090000.000000"},
        {"ContentDate": "20261207", "ContentTime": "091000"},
    ) == (
        "lateral.dcm gives its start by AcquisitionDateTime and ap.dcm by ContentDate/ContentTime,"
        " which need not name the same moment: the lateral and AP runs are paired from their first"
        " frames, as if they began together"
    )
    # ... both by their content time: paired on it
    offsets, _ = pair(
        {
            "AcquisitionDateTime": "20261207090000.000000",
            "ContentDate": "20261207",
            "ContentTime": "090000.0",
        },
        {"ContentDate": "20261207", "ContentTime": "090002.4"},
    )
    assert offsets["ap"] == pytest.approx(2.4)
    # exactly an hour apart (a local time against a UTC one) is refused; the flag pairs them anyway
    hour = ({"AcquisitionDateTime": "20261207090000"}, {"AcquisitionDateTime": "20261207100000"})
    with pytest.raises(RecordingError, match="1 h 0 min apart.*--planes-start-together"):
        pair(*hour)
    offsets, warned = pair(*hour, planes_start_together=True)
    assert offsets == {"lateral": 0.0, "ap": 0.0} and warned[0].startswith("--planes-start-together:")
    done = monitor_cli(
        *("replay", "--lateral", tmp_path / "lateral.dcm", "--ap", tmp_path / "ap.dcm", "--headless"),
        *("--speed", "0", "--planes-start-together", "--level", "L1", "--operator", "test"),
    )
    assert done.returncode == 0 and "warning: --planes-start-together: the lateral" in done.stderr, (
        done.stderr
    )

    # single-frame runs begun together: nothing to say
    def one_frame(ds, frames):
        ds.NumberOfFrames = 1
        return np.ascontiguousarray(frames[:1])

    single = DicomPairSource(
        rewrite(CASE.lateral, tmp_path / "l1.dcm", one_frame),
        rewrite(CASE.ap, tmp_path / "a1.dcm", one_frame),
    )
    single.close()
    assert single.start_offsets_s == {"lateral": 0.0, "ap": 0.0} and single.warnings == []


def test_an_angle_in_the_functional_groups_that_is_no_number_is_not_read(tmp_path):
    """As at the top level, an angle that is no number gives no plane (the operator names the
    view), and is said, rather than refusing the file."""
    from monitor.io.dicom import open_recording

    def edit(ds, frames):
        to_enhanced(ds)
        item = ds.SharedFunctionalGroupsSequence[0].PositionerPositionSequence[0]
        tag = item["PositionerPrimaryAngle"].tag
        item[tag] = pydicom.DataElement(tag, "DS", "lateral", already_converted=True)
        return frames

    with open_recording(rewrite(CASE.lateral, tmp_path / "angle.dcm", edit)) as rec:
        assert rec.info.plane is None and rec.info.primary_angle_deg is None
        assert rec.info.header_notes == (
            "its PositionerPrimaryAngle 'lateral' (PositionerPositionSequence) is not a number: not read",
        )


def test_an_enhanced_runs_geometry_is_refused_naming_the_isocentre_tag_it_came_from(tmp_path):
    """An Enhanced XA file gives the source-to-patient distance as the X-Ray Geometry macro's
    DistanceSourceToIsocenter. One larger than the source-to-detector distance was refused
    naming DistanceSourceToPatient, a tag the file does not have: the user looking for it
    found nothing to correct. The refusal names the tag the number came from, as a missing one
    names where it is looked for; a classic XA file's still names its own."""

    def isocentre_beyond_detector(ds, frames):
        to_enhanced(ds)
        geometry = ds.SharedFunctionalGroupsSequence[0].XRayGeometrySequence[0]
        geometry.DistanceSourceToIsocenter = geometry.DistanceSourceToDetector + 100
        return frames

    def without_isocentre(ds, frames):
        to_enhanced(ds)
        del ds.SharedFunctionalGroupsSequence[0].XRayGeometrySequence[0].DistanceSourceToIsocenter
        return frames

    def classic_swapped(ds, frames):
        ds.DistanceSourceToPatient = float(ds.DistanceSourceToDetector) + 100
        return frames

    problems = {}
    for name, how in [
        (f.__name__, f) for f in (isocentre_beyond_detector, without_isocentre, classic_swapped)
    ]:
        source = DicomPairSource(rewrite(CASE.lateral, tmp_path / f"{name}.dcm", how), None)
        source.close()
        problems[name] = source.scale_problems["lateral"]
    assert (
        "DistanceSourceToIsocenter (0018,9402) of the X-Ray Geometry macro"
        in problems["isocentre_beyond_detector"]
    )
    assert "is not less than DistanceSourceToDetector" in problems["isocentre_beyond_detector"]
    assert "DistanceSourceToIsocenter (0018,9402)" in problems["without_isocentre"]
    for name in ("isocentre_beyond_detector", "without_isocentre"):
        assert "DistanceSourceToPatient" not in problems[name], problems[name]
    assert "DistanceSourceToPatient (0018,1111)" in problems["classic_swapped"]
    assert "Isocenter" not in problems["classic_swapped"]
