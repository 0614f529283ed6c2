"""The DICOM reader and writer, on files we write and on files nobody here wrote."""

from __future__ import annotations

import glob
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monitor.errors import MissingGeometryError, RecordingError
from monitor.io.dicom import Geometry, WriteOptions, open_recording, plane_from_angle, write_recording

GEOMETRY = Geometry((0.2, 0.2), source_to_detector_mm=1100.0, source_to_patient_mm=800.0)


def _frames(n=6, rows=48, cols=64, bits=12, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits <= 8 else np.uint16
    return rng.integers(0, 2**bits, size=(n, rows, cols)).astype(dtype)


@pytest.mark.parametrize("compression", ["none", "rle", "jpegls", "j2k"])
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_round_trip_is_lossless_for_every_syntax_and_depth(tmp_path, compression, bits):
    frames = _frames(bits=bits)
    photometric = "MONOCHROME1" if bits == 12 else "MONOCHROME2"
    path = write_recording(
        tmp_path / "r.dcm",
        frames,
        WriteOptions(
            "lateral",
            GEOMETRY,
            40.0,
            bits,
            photometric=photometric,
            intensity_relationship="LOG",
            compression=compression,
        ),
    )
    with open_recording(path) as rec:
        info = rec.info
        assert (info.n_frames, info.rows, info.columns, info.bits_stored) == (6, 48, 64, bits)
        assert info.photometric == photometric and info.intensity_relationship == "LOG"
        assert info.plane == "lateral"
        assert info.frame_rate == pytest.approx(25.0)
        assert info.spacing_at_vertebra_mm() == pytest.approx((0.2 * 800 / 1100, 0.2 * 800 / 1100))
        assert np.array_equal(rec.frame(4), frames[4])
        assert np.array_equal(np.stack(list(rec.frames())), frames)


def test_scale_from_estimated_magnification_when_distances_are_missing(tmp_path):
    geometry = Geometry((0.3, 0.3), estimated_magnification=1.5)
    path = write_recording(tmp_path / "m.dcm", _frames(), WriteOptions("ap", geometry, 66.7, 12))
    assert open_recording(path).info.spacing_at_vertebra_mm() == pytest.approx((0.2, 0.2))


def test_missing_geometry_names_the_tag_and_the_calibration_remedy(tmp_path):
    geometry = Geometry((0.3, 0.3), source_to_detector_mm=1000.0)
    path = write_recording(tmp_path / "g.dcm", _frames(), WriteOptions("ap", geometry, 66.7, 12))
    rec = open_recording(path)
    assert np.array_equal(rec.frame(0), _frames()[0])  # pixels still usable, in pixels
    with pytest.raises(MissingGeometryError) as err:
        rec.info.spacing_at_vertebra_mm()
    message = str(err.value)
    assert "DistanceSourceToPatient (0018,1111)" in message
    assert "--calibration" in message and str(path) in message


def test_missing_imager_spacing_is_named(tmp_path):
    path = write_recording(
        tmp_path / "s.dcm", _frames(), WriteOptions("ap", Geometry(None, 1000, 750), 50, 12)
    )
    with pytest.raises(MissingGeometryError, match=r"ImagerPixelSpacing \(0018,1164\)"):
        open_recording(path).info.spacing_at_vertebra_mm()


@pytest.mark.parametrize(
    ("angle", "plane"),
    [
        (0, "ap"),
        (180, "ap"),
        (-178, "ap"),
        (90, "lateral"),
        (-90, "lateral"),
        (270, "lateral"),
        (45, None),
        (-30, None),
    ],
)
def test_plane_from_positioner_angle(angle, plane):
    assert plane_from_angle(angle) == plane


def test_oblique_view_needs_an_explicit_plane(tmp_path):
    path = write_recording(
        tmp_path / "o.dcm",
        _frames(),
        WriteOptions("ap", GEOMETRY, 50, 12, extra={"PositionerPrimaryAngle": "45"}),
    )
    with pytest.raises(RecordingError, match=r"45 deg is oblique\); pass --plane"):
        open_recording(path).info.require_plane()
    assert open_recording(path, plane="lateral").info.require_plane() == "lateral"


def test_timing_from_frame_time_vector(tmp_path):
    vector = ["0", "100", "50", "50", "100", "50"]
    path = write_recording(
        tmp_path / "v.dcm", _frames(), WriteOptions("ap", GEOMETRY, 50, 12, extra={"FrameTimeVector": vector})
    )
    info = open_recording(path).info
    # FrameTime is also present; the per-frame vector is the more specific and wins.
    assert info.timing_source == "FrameTimeVector"
    assert np.allclose(info.frame_times_s, [0, 0.1, 0.15, 0.2, 0.3, 0.35])


def test_reading_frame_zero_does_not_decode_the_whole_recording(tmp_path):
    frames = np.zeros((40, 1024, 1024), np.uint16)
    frames[:, 0, 0] = np.arange(40)
    path = write_recording(tmp_path / "big.dcm", frames, WriteOptions("lateral", GEOMETRY, 33.3, 12))
    del frames
    tracemalloc.start()
    rec = open_recording(path)
    first = rec.frame(0)
    streamed = next(rec.frames(start=39))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert first[0, 0] == 0 and streamed[0, 0] == 39
    one_frame = 1024 * 1024 * 2
    assert peak < 4 * one_frame, f"peak {peak / 1e6:.1f} MB while reading single frames of an 84 MB file"


def test_series_folder_is_read_in_instance_order(tmp_path):
    frames = _frames(n=4)
    for i in (2, 0, 3, 1):
        ds_path = write_recording(
            tmp_path / f"tmp{i}.dcm",
            frames[i : i + 1],
            WriteOptions("lateral", GEOMETRY, 50, 12, uid_seed=f"s{i}"),
        )
        ds = pydicom.dcmread(ds_path)
        ds.InstanceNumber = i + 1
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"  # one series, as a C-arm writes it
        del ds.NumberOfFrames
        ds.save_as(tmp_path / f"img_{'zyxw'[i]}.dcm")
        os.remove(ds_path)
    (tmp_path / "notes.txt").write_text("not an image")
    rec = open_recording(tmp_path)
    assert rec.info.n_frames == 4
    assert np.array_equal(np.stack(list(rec.frames())), frames)


def test_series_folder_with_mixed_frame_sizes_is_refused(tmp_path):
    write_recording(tmp_path / "a.dcm", _frames(n=1), WriteOptions("ap", GEOMETRY, 50, 12, uid_seed="a"))
    write_recording(
        tmp_path / "b.dcm", _frames(n=1, rows=32), WriteOptions("ap", GEOMETRY, 50, 12, uid_seed="b")
    )
    for number, f in enumerate(("a.dcm", "b.dcm"), start=1):
        ds = pydicom.dcmread(tmp_path / f)
        ds.SeriesInstanceUID, ds.InstanceNumber = "1.2.826.0.1.3680043.8.498.2", number
        del ds.NumberOfFrames
        ds.save_as(tmp_path / f)
    with pytest.raises(RecordingError, match="differs from"):
        open_recording(tmp_path)


def _series_folder(folder: Path, frames: np.ndarray, plane: str, series: str, start: int = 1) -> None:
    """``frames`` as single-frame images of one series in ``folder``, numbered from ``start``."""
    for i, frame in enumerate(frames):
        path = write_recording(
            folder / f"{series}-{i}.dcm",
            frame[None],
            WriteOptions(plane, GEOMETRY, 50, 12, uid_seed=f"{series}{i}"),
        )
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.InstanceNumber, ds.SeriesNumber = (
            f"1.2.826.0.1.3680043.8.498.{series}",
            start + i,
            series,
        )
        del ds.NumberOfFrames
        ds.save_as(path)


def test_a_folder_holding_two_series_is_refused_naming_them(tmp_path):
    """A PACS export puts both planes (or two runs) side by side: read as one series, lateral
    frames were interleaved into the AP stream (a false high venous alarm, session 72)."""
    _series_folder(tmp_path, _frames(n=3), "lateral", "7")
    _series_folder(tmp_path, _frames(n=2), "ap", "8")
    with pytest.raises(
        RecordingError, match=r"holds 2 series \(series 7: 3 image\(s\), lateral; series 8: 2"
    ):
        open_recording(tmp_path)


def test_a_series_without_instance_numbers_is_read_in_acquisition_order(tmp_path):
    """Files named by their UIDs, no InstanceNumber: the acquisition time orders the frames (they
    played in file-name order before); with neither, the folder is refused, not guessed."""
    frames = _frames(n=4)
    _series_folder(tmp_path, frames, "lateral", "9")
    for i, f in enumerate(sorted(tmp_path.glob("9-*.dcm"))):
        ds = pydicom.dcmread(f)
        del ds.InstanceNumber
        ds.AcquisitionTime = f"1200{10 + 3 - i:02d}.000000"  # written in reverse: the names mislead
        ds.save_as(f)
    rec = open_recording(tmp_path)
    assert np.array_equal(np.stack(list(rec.frames())), frames[::-1])
    for f in tmp_path.glob("9-*.dcm"):
        ds = pydicom.dcmread(f)
        del ds.AcquisitionTime
        if "ContentTime" in ds:
            del ds.ContentTime
        if "AcquisitionDateTime" in ds:
            del ds.AcquisitionDateTime
        ds.save_as(f)
    with pytest.raises(RecordingError, match="the frames' order cannot be told"):
        open_recording(tmp_path)


def test_bad_inputs_fail_with_one_clear_line(tmp_path):
    text = tmp_path / "notes.dcm"
    text.write_text("this is not DICOM\n" * 20)
    good = write_recording(tmp_path / "good.dcm", _frames(), WriteOptions("ap", GEOMETRY, 50, 12))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-5000])
    # compressed (encapsulated) pixel data cut short: pydicom only warns, and it read as a file
    # with no pixel data at all (an independent test)
    from monitor.recordings import default_recording

    cut = tmp_path / "cut-compressed.dcm"
    cut.write_bytes(default_recording().lateral.read_bytes()[:800_000])
    cases = {
        text: "not a DICOM file",
        truncated: "truncated",
        cut: "truncated: the file ends inside its pixel data",
        tmp_path / "absent.dcm": "no such file",
        tmp_path / "empty_dir": "no DICOM images",
    }
    (tmp_path / "empty_dir").mkdir()
    for path, reason in cases.items():
        with pytest.raises(RecordingError) as err:
            open_recording(path)
        assert reason in str(err.value) and str(path) in str(err.value)
        assert "\n" not in str(err.value)


def _public_test_files() -> list[str]:
    """DICOM test files shipped with pydicom and pydicom-data (many vendors and syntaxes)."""
    roots = [Path(pydicom.__file__).parent / "data" / "test_files"]
    try:
        import data_store  # pydicom-data

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    files = []
    for root in roots:
        files += [f for f in glob.glob(str(root / "**" / "*"), recursive=True) if os.path.isfile(f)]
    return sorted(files)


PUBLIC_FILES = _public_test_files()


@pytest.mark.parametrize("path", PUBLIC_FILES, ids=[Path(p).name for p in PUBLIC_FILES])
def test_public_files_decode_or_fail_clearly(path):
    """Each file either opens and decodes its first and last frame, or is
    refused with a RecordingError; nothing else may escape."""
    try:
        rec = open_recording(path)
    except RecordingError as e:
        assert path in str(e) and "\n" not in str(e)
        return
    with rec:
        try:
            first = rec.frame(0)
            last = rec.frame(len(rec) - 1)
        except RecordingError as e:
            said = str(e)
            # a CT's Hounsfield units (negative after the rescale) are no X-ray intensity's
            assert "could not be decoded" in said or "expected" in said or "no detector's reading" in said
            return
        assert first.shape == rec.info.shape == last.shape
        assert first.dtype in (np.uint8, np.uint16) and first.dtype.isnative  # as the wire takes them


def test_public_corpus_is_present_and_mostly_readable():
    assert len(PUBLIC_FILES) > 80
    opened = decoded_multiframe = 0
    for path in PUBLIC_FILES:
        try:
            with open_recording(path) as rec:
                rec.frame(len(rec) - 1)
                opened += 1
                decoded_multiframe += len(rec) > 1
        except RecordingError:
            pass
    # 58 of 244 since session 72: 17 CT and MR files whose values are negative after the
    # rescale (Hounsfield units) are refused, as no detector's reading, where they opened before
    assert opened >= 55 and decoded_multiframe >= 6


def _public(name: str) -> str:
    return next(p for p in PUBLIC_FILES if Path(p).name == name)


def test_known_public_files_behave_as_expected():
    with pytest.raises(RecordingError, match="colour image"):
        open_recording(_public("SC_rgb.dcm"))
    with pytest.raises(RecordingError, match="truncated"):
        open_recording(_public("MR_truncated.dcm"))
    with open_recording(_public("emri_small.dcm")) as ref:  # 10-frame MR, 16 bit
        assert len(ref) == 10 and ref.frame(9).shape == (64, 64)
        for name in (
            "emri_small_RLE.dcm",
            "emri_small_jpeg_ls_lossless.dcm",
            "emri_small_jpeg_2k_lossless.dcm",
            "emri_small_big_endian.dcm",
        ):
            with open_recording(_public(name)) as rec:
                pairs = zip(rec.frames(), ref.frames(), strict=True)
                assert all(np.array_equal(a, b) for a, b in pairs), name
