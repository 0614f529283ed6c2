"""Read and write fluoroscopy recordings as DICOM.

Reading gives a :class:`Recording`: the metadata the monitor needs (plane,
geometry, timing, how pixel values map to X-ray intensity) read once from the
header, and frames decoded one at a time on demand through pydicom's pixel
data backends, so that streaming a long 1024x1024 run starts at once and never
holds more than a frame in memory.

Accepted inputs: X-Ray Angiographic (XA) and Radio-Fluoroscopic (RF)
multi-frame objects, any other monochrome multi-frame object with the same
tags, and a folder holding a series of single-frame objects. Compressed
transfer syntaxes (RLE, JPEG lossless, JPEG-LS, JPEG 2000) decode through the
installed pydicom plugins (pylibjpeg, pyjpegls).
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from monitor.errors import ImplausibleGeometryError, MissingGeometryError, RecordingError
from monitor.messages import PLANES

XA_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.12.1")
RF_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.12.2")
ENHANCED_STORAGE = frozenset({"1.2.840.10008.5.1.4.1.1.12.1.1", "1.2.840.10008.5.1.4.1.1.12.2.1"})  # XA, XRF

COMPRESSIONS = {
    "none": ExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls": JPEGLSLossless,
    "j2k": JPEG2000Lossless,
}

# JPEG-LS (our recordings' codec, and common in XA archives) decodes through CharLS (pyjpegls):
# pydicom's default pick, libjpeg, is about 4x slower (384 px: 14 vs 3.5 ms a frame), time
# taken from the frame budget on the machine that also analyses. Both decode to the same
# pixels; the other syntaxes keep pydicom's choice.
_PREFERRED_DECODER = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}


def _decoding_plugin(transfer_syntax: str) -> str:
    """The pydicom decoding plugin to ask for ``transfer_syntax``, or "" for pydicom's own pick
    (also when the preferred one is not installed)."""
    from pydicom.pixels import get_decoder

    plugin = _PREFERRED_DECODER.get(UID(transfer_syntax), "")
    if plugin and plugin not in get_decoder(UID(transfer_syntax)).available_plugins:
        return ""
    return plugin


CALIBRATION_HINT = "supply a calibration profile with --calibration PROFILE"
PLAUSIBLE_DETECTOR_PIXEL_MM = (0.05, 1.0)  # flat panels 0.1-0.2 mm, intensifier chains up to ~0.5
PLAUSIBLE_MAGNIFICATION = (1.05, 2.5)  # SID / SOD of a C-arm with the patient between
MAX_ANISOTROPY = 0.02  # row and column pixel sizes differ by at most this fraction
SOURCE_TO_PATIENT_TAG = "DistanceSourceToPatient (0018,1111)"
ISOCENTRE_TAG = "DistanceSourceToIsocenter (0018,9402) of the X-Ray Geometry macro"


@dataclass(frozen=True)
class Geometry:
    """Projection geometry from the DICOM header; any field may be missing.

    Spacing at the vertebra is the detector spacing divided by the
    magnification, SID / SOD when both distances are present, otherwise the
    EstimatedRadiographicMagnificationFactor.
    """

    imager_pixel_spacing_mm: tuple[float, float] | None = None  # (row, column) at the detector
    source_to_detector_mm: float | None = None
    source_to_patient_mm: float | None = None
    estimated_magnification: float | None = None
    # the tag source_to_patient_mm is (or would be) read from, as messages name it: an Enhanced
    # XA/XRF file's X-Ray Geometry macro gives the source-to-isocentre distance instead
    source_to_patient_tag: str = SOURCE_TO_PATIENT_TAG

    def missing(self) -> list[str]:
        """Names of the tags still needed to compute millimetres at the vertebra."""
        needed = []
        if self.imager_pixel_spacing_mm is None:
            needed.append("ImagerPixelSpacing (0018,1164)")
        has_distances = self.source_to_detector_mm and self.source_to_patient_mm
        if not has_distances and not self.estimated_magnification:
            if not self.source_to_detector_mm:
                needed.append("DistanceSourceToDetector (0018,1110)")
            if not self.source_to_patient_mm:
                needed.append(self.source_to_patient_tag)
            needed[-1] += " or EstimatedRadiographicMagnificationFactor (0018,1114)"
        return needed

    @property
    def magnification(self) -> float:
        """Detector size over size at the vertebra (isocentre); >= 1."""
        if self.source_to_detector_mm and self.source_to_patient_mm:
            return self.source_to_detector_mm / self.source_to_patient_mm
        if self.estimated_magnification:
            return self.estimated_magnification
        raise MissingGeometryError(
            f"no magnification: missing {', '.join(self.missing())}; {CALIBRATION_HINT}"
        )

    def spacing_at_vertebra_mm(self) -> tuple[float, float]:
        """(row, column) pixel spacing in mm at the vertebra, once the tags are plausible."""
        if self.imager_pixel_spacing_mm is None or self.missing():
            raise MissingGeometryError(
                f"no scale in millimetres: missing {', '.join(self.missing())}; {CALIBRATION_HINT}"
            )
        problem = self.implausible()
        if problem:
            raise ImplausibleGeometryError(f"no trustworthy scale: {problem}; {CALIBRATION_HINT}")
        m = self.magnification
        return (self.imager_pixel_spacing_mm[0] / m, self.imager_pixel_spacing_mm[1] / m)

    def implausible(self) -> str | None:
        """Why the tags cannot describe a C-arm's fluoroscopy, naming the tag; None if they can.

        Detector pixels of 0.05-1 mm, square within 2 %; a source-to-patient distance below
        the source-to-detector one; a magnification of 1.05-2.5 (an isocentric C-arm's is
        1.2-2: the patient lies between source and detector). A 10x spacing, swapped
        distances or a unit error read millimetres that are off by as much, and every
        distance to the wall with them.
        """
        spacing = self.imager_pixel_spacing_mm
        if spacing is not None:
            if not all(math.isfinite(v) for v in spacing):
                return f"ImagerPixelSpacing (0018,1164) {list(spacing)} is not a number"
            low, high = PLAUSIBLE_DETECTOR_PIXEL_MM
            if not all(low <= v <= high for v in spacing):
                return f"ImagerPixelSpacing (0018,1164) {list(spacing)} mm is outside {low}-{high} mm"
            if abs(spacing[0] / spacing[1] - 1) > MAX_ANISOTROPY:
                return f"ImagerPixelSpacing (0018,1164) {list(spacing)} mm is not square (within 2 %)"
        sid, sod = self.source_to_detector_mm, self.source_to_patient_mm
        for name, value in (
            ("DistanceSourceToDetector (0018,1110)", sid),
            (self.source_to_patient_tag, sod),
            ("EstimatedRadiographicMagnificationFactor (0018,1114)", self.estimated_magnification),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                return f"{name} {value} is not a positive number"
        if sid and sod and sod >= sid:
            return (
                f"{self.source_to_patient_tag} {sod:g} mm is not less than "
                f"DistanceSourceToDetector (0018,1110) {sid:g} mm"
            )
        low, high = PLAUSIBLE_MAGNIFICATION
        try:
            m = self.magnification
        except MissingGeometryError:
            return None
        if not low <= m <= high:
            source = (
                f"DistanceSourceToDetector / {self.source_to_patient_tag.split(' ')[0]}"
                if sid and sod
                else "EstimatedRadiographicMagnificationFactor (0018,1114)"
            )
            return f"magnification {m:.3g} from {source} is outside {low}-{high}"
        return None


@dataclass(frozen=True)
class RunStart:
    """When a run began by one family of its header's tags."""

    family: str  # "acquisition" (AcquisitionDateTime, or AcquisitionDate/Time) or "content"
    tags: str  # the tags it was read from, as people name them
    when: dt.datetime  # aware where the value, or TimezoneOffsetFromUTC, gives the zone
    resolution_s: float  # what the stamp tells apart: 1 s for whole seconds, 0.001 s for ms


@dataclass(frozen=True)
class RecordingInfo:
    """What the monitor needs to know about a recording, read from its header."""

    path: Path
    rows: int
    columns: int
    n_frames: int
    bits_stored: int
    bits_allocated: int
    photometric: str  # MONOCHROME1 (high value = dark) or MONOCHROME2
    intensity_relationship: str | None  # LIN, LOG, DISP or None when absent
    intensity_sign: int | None  # PixelIntensityRelationshipSign: +1 or -1
    plane: str | None  # "lateral", "ap", or None when unknown
    primary_angle_deg: float | None
    geometry: Geometry
    frame_times_s: np.ndarray | None = field(repr=False)  # offsets from the first frame
    timing_source: str | None
    transfer_syntax: str
    sop_class: str
    modality: str
    secondary_angle_deg: float | None = None  # PositionerSecondaryAngle: cranial (+) / caudal (-)
    signed: bool = False  # PixelRepresentation 1: two's complement stored values
    # an Enhanced XA/XRF object (or any with functional groups): its geometry, intensity, angles
    # and frame times are read from SharedFunctionalGroupsSequence / PerFrameFunctionalGroupsSequence
    # (:func:`_lift_functional_groups`) where the top level does not give them
    functional_groups: bool = False
    modality_lut: bool = False  # a Modality LUT Sequence, which is not applied (said by the source)
    # what reading the header had to choose, for the operator (said by the source): an attribute
    # of the functional groups that differs between frames, the first frame's taken
    header_notes: tuple[str, ...] = ()
    # (RescaleSlope, RescaleIntercept) where they are not the identity: frames are given as
    # stored * slope + intercept (the Modality LUT), the values the intensity relationship is of
    rescale: tuple[float, float] | None = None
    # when the run began, as each family of tags the header fills says (the acquisition's first,
    # then the content's): what pairs a lateral and an AP run that did not start together
    # (:class:`monitor.io.sources.DicomPairSource`); empty when the header has no date and time
    starts: tuple[RunStart, ...] = ()

    @property
    def started(self) -> dt.datetime | None:
        """When the run began, by the header's first family of tags that says; None if none."""
        return self.starts[0].when if self.starts else None

    @property
    def started_from(self) -> str | None:
        return self.starts[0].tags if self.starts else None

    @property
    def value_bits(self) -> int:
        """The bits a frame's values may use once read (:meth:`Recording._values`): a rescale's
        can exceed the stored ones, so 16 (the analysis finds the bits they use)."""
        return 16 if self.rescale is not None else self.bits_stored

    @property
    def value_dtype(self) -> np.dtype:
        """The one type every frame of the recording is given in."""
        return np.dtype(np.uint16 if self.rescale is not None or self.bits_allocated > 8 else np.uint8)

    @property
    def analysis_photometric(self) -> str:
        """Which way the values run for the analysis: "MONOCHROME1" where higher values mean
        less X-ray intensity, as PixelIntensityRelationshipSign -1 says (whatever the display's
        PhotometricInterpretation); else the photometric. A MONOCHROME2 image with sign -1 (an
        inverted LOG image) read as its photometric had its cement read as bone removed."""
        if self.intensity_sign is not None:
            return "MONOCHROME1" if self.intensity_sign == -1 else "MONOCHROME2"
        return self.photometric

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.columns)

    @property
    def frame_rate(self) -> float | None:
        """Mean frames per second, or None when the recording carries no timing."""
        if self.frame_times_s is None or self.n_frames < 2:
            return None
        span = float(self.frame_times_s[-1] - self.frame_times_s[0])
        return (self.n_frames - 1) / span if span > 0 else None

    @property
    def _groups_note(self) -> str:
        """Said with a missing tag where the object keeps its attributes in functional groups
        (Enhanced XA/XRF): they were looked for there too (an independent test, session 72, was
        told "missing ImagerPixelSpacing" of such a file, when the monitor did not read them)."""
        if not self.functional_groups:
            return ""
        return " (not at its top level, nor in its functional groups, where Enhanced XA/XRF objects keep it)"

    def require_plane(self) -> str:
        if self.plane is None:
            angle = (
                "no PositionerPrimaryAngle (0018,1510)"
                if self.primary_angle_deg is None
                else f"PositionerPrimaryAngle {self.primary_angle_deg:g} deg is oblique"
            )
            raise RecordingError(
                f"{self.path}: cannot tell AP from lateral ({angle}){self._groups_note}; pass --plane"
            )
        return self.plane

    def require_frame_times(self) -> np.ndarray:
        if self.frame_times_s is None:
            raise RecordingError(
                f"{self.path}: no timing (FrameTime (0018,1063), FrameTimeVector (0018,1065) "
                f"or CineRate (0018,0040)){self._groups_note}; pass --fps"
            )
        return self.frame_times_s

    def spacing_at_vertebra_mm(self) -> tuple[float, float]:
        try:
            return self.geometry.spacing_at_vertebra_mm()
        except MissingGeometryError as e:
            said = str(e)
            if "missing" in said:  # the note before the hint, which callers may cut off
                said = said.replace("; supply", f"{self._groups_note}; supply", 1)
            raise MissingGeometryError(f"{self.path}: {said}") from None


def plane_from_angle(angle_deg: float) -> str | None:
    """AP near 0 or 180 degrees, lateral near +/-90; None for oblique views."""
    a = abs((angle_deg + 180.0) % 360.0 - 180.0)
    if a <= 20.0 or a >= 160.0:
        return "ap"
    if 70.0 <= a <= 110.0:
        return "lateral"
    return None


class Recording:
    """A fluoroscopy run whose frames are decoded lazily, one at a time."""

    def __init__(self, info: RecordingInfo, frame_files: Sequence[Path] | None = None):
        self.info = info
        self._frame_files = list(frame_files) if frame_files else None
        self._fh: BinaryIO | None = None
        self._inflated: BinaryIO | None = None  # a deflated file's dataset, inflated (_pixels_path)
        self._plugin = _decoding_plugin(info.transfer_syntax) if self._frame_files is None else ""

    def __len__(self) -> int:
        return self.info.n_frames

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._inflated is not None:
            self._inflated.close()
            self._inflated = None

    def _pixels_path(self) -> Path:
        """Where frames are read from: the file, or for the deflated syntax (which compresses the
        whole dataset, so there is no frame to seek to) a copy inflated once into a temporary
        file. Each frame had re-read and re-inflated the whole file: 0.34 s a frame at 1024 x
        1024 x 48, and quadratic in the frames (an independent test, session 72)."""
        if not UID(self.info.transfer_syntax).is_deflated:
            return self.info.path
        if self._inflated is None:
            self._inflated = _inflated_copy(self.info.path)
        # the copy has no name (a killed process leaves nothing in /tmp: a review of session 72
        # found 25 MB a plane left by each SIGKILL); each reader opens it anew through its
        # descriptor, with an offset of its own
        return Path(f"/proc/self/fd/{self._inflated.fileno()}")

    def frame(self, index: int) -> np.ndarray:
        """One frame's values, (rows, columns): unsigned 8 or 16 bits (``info.value_dtype``), after
        the Modality LUT's rescale (:meth:`_values`)."""
        if not 0 <= index < self.info.n_frames:
            raise IndexError(f"frame {index} outside 0..{self.info.n_frames - 1}")
        try:
            if self._frame_files is not None:
                arr = pixel_array(str(self._frame_files[index]))
            else:
                if self._fh is None:
                    self._fh = open(self._pixels_path(), "rb")  # noqa: SIM115 - kept open across frames
                self._fh.seek(0)
                arr = pixel_array(self._fh, index=index, decoding_plugin=self._plugin)
        except RecordingError:
            raise
        except Exception as e:  # decoders raise many types; name the frame and the cause
            raise RecordingError(
                f"{self.info.path}: frame {index} could not be decoded ({_one_line(e)})"
            ) from e
        return self._checked(arr, index)

    def frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Frames in order from ``start``, each decoded only when asked for."""
        if self._frame_files is not None or start > 0:
            for i in range(start, self.info.n_frames):
                yield self.frame(i)
            return
        index = 0
        try:
            with open(self._pixels_path(), "rb") as fh:
                for arr in iter_pixels(fh, decoding_plugin=self._plugin):
                    yield self._checked(arr, index)
                    index += 1
        except RecordingError:
            raise
        except Exception as e:
            raise RecordingError(
                f"{self.info.path}: frame {index} could not be decoded ({_one_line(e)})"
            ) from e

    def _checked(self, arr: np.ndarray, index: int) -> np.ndarray:
        if arr.shape != self.info.shape:
            raise RecordingError(
                f"{self.info.path}: frame {index} is {arr.shape}, expected {self.info.shape}"
            )
        return self._values(arr, index)

    def _values(self, arr: np.ndarray, index: int) -> np.ndarray:
        """The frame as the monitor reads every stream: unsigned 8 or 16 bits in this machine's
        byte order, after the Modality LUT (RescaleSlope and RescaleIntercept). Big-endian data
        (a retired syntax still in archives), signed data and a rescale once reached the wire
        as they were and stopped the replay mid-stream ("aborted: 'int16'"), or were read
        without the rescale that made a LIN image's values proportional to the intensity."""
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        rescale = self.info.rescale
        if rescale is None and arr.dtype.kind == "u":
            return arr
        if rescale is None:
            values = arr
        elif rescale[0] == 1.0 and float(rescale[1]).is_integer():  # a shift: integers, no rounding
            values = arr.astype(np.int32) + int(rescale[1])
        else:  # 4 ms a 1024 x 1024 frame in float64 (review of session 72): float32 is exact to 2^24
            values = np.rint(arr.astype(np.float32) * np.float32(rescale[0]) + np.float32(rescale[1]))
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 65535:
            how = f" after RescaleSlope {rescale[0]:g}, RescaleIntercept {rescale[1]:g}" if rescale else ""
            raise RecordingError(
                f"{self.info.path}: frame {index} holds values {low:g} to {high:g}{how}: the monitor"
                " reads values of 0-65535 (an X-ray intensity or its log); a negative or larger"
                " one is no detector's reading"
            )
        # one type for the whole stream, whatever this frame's values (the wire, the log and an
        # export take it from the stream: 8-bit stored data with a rescale gave uint8 and uint16
        # frames in one stream, and its export failed, review of session 72)
        return values.astype(self.info.value_dtype)


def _inflated_copy(path: Path) -> BinaryIO:
    """``path``, a deflated explicit VR little endian file, as an open temporary explicit VR
    little endian file with no name (gone when closed, or when the process dies): its preamble,
    its file meta with the syntax changed, and the rest inflated in chunks (never the whole
    dataset in memory; each chunk's output capped, so that a small file cannot inflate into a
    large piece of memory at once)."""
    import tempfile
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import _read_file_meta_info, read_preamble
    from pydicom.filewriter import write_file_meta_info

    with open(path, "rb") as src:
        read_preamble(src, False)
        meta = _read_file_meta_info(src)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        header = DicomBytesIO()
        header.is_little_endian, header.is_implicit_VR = True, False
        write_file_meta_info(header, meta, enforce_standard=True)
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        out = tempfile.TemporaryFile(prefix="monitor-inflated-", suffix=".dcm")  # noqa: SIM115 - returned open
        try:
            out.write(b"\0" * 128 + b"DICM" + header.getvalue())
            while chunk := src.read(1 << 20):
                out.write(inflate.decompress(chunk, 1 << 24))
                while inflate.unconsumed_tail:
                    out.write(inflate.decompress(inflate.unconsumed_tail, 1 << 24))
            out.write(inflate.flush())
            out.flush()
        except BaseException:
            out.close()
            raise
    return out


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def open_recording(path: str | os.PathLike, plane: str | None = None) -> Recording:
    """Open a multi-frame DICOM file, or a folder of single-frame DICOM files.

    ``plane`` overrides the view derived from PositionerPrimaryAngle.
    Raises :class:`RecordingError` with a one-line reason for anything unusable.
    """
    p = Path(path)
    if plane is not None and plane not in PLANES:
        raise RecordingError(f"unknown plane {plane!r}; use one of {', '.join(PLANES)}")
    if p.is_dir():
        return _open_series(p, plane)
    ds = _read_header(p)
    declared = _number_of_frames(ds)
    present = _frames_present(p, ds)
    if present is not None and present > declared:
        raise RecordingError(
            f"{p}: the pixel data holds {present} frames but NumberOfFrames (0028,0008) says {declared}:"
            " replaying only those would hide the rest of the case"
        )
    if present is not None and present < declared:
        raise RecordingError(
            f"{p}: truncated: the pixel data holds {present} of the {declared} frames NumberOfFrames "
            "(0028,0008) declares"
            + (f" ({_pixel_data_length(p)} bytes)" if not UID(_syntax(ds)).is_compressed else "")
        )
    info = _info_from_header(p, ds, ds_frames=declared, plane=plane)
    _check_pixel_length(p, ds, info)
    return Recording(info)


_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian
_SEQUENCE_END = b"\xfe\xff\xdd\xe0"  # (FFFE,E0DD)
# How a frame's first fragment begins: JPEG and JPEG-LS (SOI), a JPEG 2000 codestream (SOC
# SIZ) or a JP2 file (its signature box). Later fragments of a frame are bytes of its middle.
_FRAME_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


def _syntax(ds: Dataset) -> str:
    return str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))


def _frames_present(path: Path, ds: Dataset) -> int | None:
    """How many whole frames the file's pixel data holds, read from the file's structure
    without decoding or loading it (NumberOfFrames is only what the header claims), or None
    when that cannot be told (an unusual layout: the decoders then have the last word).

    Native data: its element's length (or what the file holds of it) over one frame's.
    Encapsulated: RLE has one fragment per frame; in the JPEG family each frame's first
    fragment begins with its start marker (a frame may span fragments; padding, a missing
    end marker or a marker split across fragments do not matter).
    """
    syntax = UID(_syntax(ds))
    try:
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            return None  # colour (subsampled chroma and all) is refused on its own account
        frame_bytes = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        return None
    if frame_bytes <= 0 or syntax.is_deflated:
        return None
    if not syntax.is_compressed:
        size = _pixel_data_length(path)
        return None if size is None else size // frame_bytes
    with open(path, "rb") as fh:
        try:
            pydicom.dcmread(fh, stop_before_pixels=True)
        except Exception:  # the full read already succeeded; be conservative
            return None
        fh.seek(12, os.SEEK_CUR)  # Pixel Data: tag, VR, reserved, undefined length
        frames, starts, first = 0, 0, True
        while True:
            head = fh.read(8)
            if len(head) < 8 or head[:4] == _SEQUENCE_END:
                break
            if head[:4] != _ITEM:
                return None
            length = int.from_bytes(head[4:], "little")
            if first:  # the basic offset table
                first = False
                fh.seek(length, os.SEEK_CUR)
                continue
            opening = fh.read(min(length, 12))
            fh.seek(length - len(opening), os.SEEK_CUR)
            frames += 1
            starts += any(opening.startswith(m) for m in _FRAME_STARTS)
        if syntax == RLELossless:
            return frames
        return starts if starts else None  # no start marker at all: an encoding we cannot read


def _read_header(path: Path) -> Dataset:
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, defer_size="1 KB")
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory") from None
    except PermissionError:
        raise RecordingError(f"{path}: permission denied") from None
    except InvalidDicomError:
        raise RecordingError(f"{path}: not a DICOM file") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError) as e:
        raise RecordingError(f"{path}: unreadable DICOM ({_one_line(e)})") from None
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        raise RecordingError(
            f"{path}: no TransferSyntaxUID (0002,0010) in its file meta: how its pixel data is"
            " encoded cannot be told"
        )
    # pydicom warns, rather than fails, where a file ends inside a sequence: encapsulated (compressed)
    # pixel data cut short reads as a file with none, which it was not (an independent test)
    truncated = [w for w in said if "End of file reached" in str(w.message)]
    for w in said:
        if w not in truncated:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if truncated:
        raise RecordingError(
            f"{path}: truncated: the file ends inside its pixel data (a copy cut short, or still being"
            " written): copy it again from the C-arm or the archive"
        )
    if "PixelData" not in ds:
        what = ds.get("SOPClassUID", None)
        name = what.name if isinstance(what, UID) else "object"
        raise RecordingError(f"{path}: no image pixel data ({name})")
    return ds


def _number_of_frames(ds: Dataset) -> int:
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def _float(ds: Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, pydicom.multival.MultiValue)):
            value = value[0]
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _geometry(ds: Dataset, source_to_patient_tag: str = SOURCE_TO_PATIENT_TAG) -> Geometry:
    spacing = ds.get("ImagerPixelSpacing")
    if not isinstance(spacing, (list, pydicom.multival.MultiValue)):
        spacing = None  # absent, empty, or a single value where DICOM requires two
    pair = None
    if spacing is not None and len(spacing) == 2:
        try:
            pair = (float(spacing[0]), float(spacing[1]))
        except (TypeError, ValueError):
            pair = None
        if pair and (pair[0] <= 0 or pair[1] <= 0):
            pair = None
    sid = _float(ds, "DistanceSourceToDetector")
    sod = _float(ds, "DistanceSourceToPatient")
    mag = _float(ds, "EstimatedRadiographicMagnificationFactor")
    return Geometry(
        imager_pixel_spacing_mm=pair,
        source_to_detector_mm=sid if sid and sid > 0 else None,
        source_to_patient_mm=sod if sod and sod > 0 else None,
        estimated_magnification=mag if mag and mag >= 1.0 else None,
        source_to_patient_tag=source_to_patient_tag,
    )


# Enhanced XA/XRF objects (PS3.3 A.47, A.48) keep what the monitor reads in functional group
# macros: one-item sequences in the SharedFunctionalGroupsSequence's item (the same for every
# frame) or in each frame's item of the PerFrameFunctionalGroupsSequence (PS3.3 C.7.6.16).
# (the macro's sequence, the attribute in it, the top-level attribute it is read as): the
# X-Ray Geometry macro's isocentre is what XA's DistanceSourceToPatient means (PS3.3 C.8.7.5:
# the source to the isocentre), the vertebra the C-arm is centred on.
_GROUP_ATTRIBUTES = (
    ("FramePixelDataPropertiesSequence", "ImagerPixelSpacing", "ImagerPixelSpacing"),
    ("FramePixelDataPropertiesSequence", "PixelIntensityRelationship", "PixelIntensityRelationship"),
    ("FramePixelDataPropertiesSequence", "PixelIntensityRelationshipSign", "PixelIntensityRelationshipSign"),
    ("XRayGeometrySequence", "DistanceSourceToDetector", "DistanceSourceToDetector"),
    ("XRayGeometrySequence", "DistanceSourceToIsocenter", "DistanceSourceToPatient"),
    ("PositionerPositionSequence", "PositionerPrimaryAngle", "PositionerPrimaryAngle"),
    ("PositionerPositionSequence", "PositionerSecondaryAngle", "PositionerSecondaryAngle"),
)
# What one run must hold for all its frames, and how closely (relative; None: exactly): the
# analysis reads one scale and one intensity relationship per view, so frames that differ in
# these (a zoom, the detector moved) are refused rather than half misread.
_ONE_PER_RUN = {
    "ImagerPixelSpacing": 1e-4,  # rounding jitter of a DS value, not a zoom
    "PixelIntensityRelationship": None,
    "PixelIntensityRelationshipSign": None,
    "DistanceSourceToDetector": 0.01,  # 1 % of the magnification
    "DistanceSourceToIsocenter": 0.01,
}
# How far an angle may stray from the first frame's before it is said: a C-arm's readout jitters
# by a tenth of a degree; the run is read at the first frame's.
_ANGLE_TOLERANCE_DEG = 1.0
_ANGLES = frozenset({"PositionerPrimaryAngle", "PositionerSecondaryAngle"})
# The values each numeric attribute holds (DICOM's multiplicity).
_VALUES = {"ImagerPixelSpacing": 2}
# A first or last frame stamp this far (s) from the next is a typo, not a pause: an hour off at
# either end still rises with the rest of the run (review of session 74); a pause of seconds,
# even of many usual steps (slow pulses after fast ones), is the run's own and is kept.
_FAR_STEP_S = 600.0
# Per-frame acquisition stamps coarser than this cannot time frames 33-133 ms apart.
_FRAME_STAMP_RESOLUTION_S = 0.01


def _macro_value(item: Dataset | None, macro: str, keyword: str):
    """``keyword`` in ``item``'s one-item ``macro`` sequence; None when absent or empty."""
    if item is None:
        return None
    sequence = item.get(macro)
    if not sequence:
        return None
    value = sequence[0].get(keyword)
    return None if value is None or value == "" else value


def _as_numbers(value) -> list[float] | None:
    """``value``'s numbers (one or several), all finite; None when any is not one."""
    try:
        values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return numbers if numbers and all(math.isfinite(v) for v in numbers) else None


def _checked(path: Path, macro: str, keyword: str, value):
    """``value`` of ``keyword`` from a functional group, as the top level holds it: numbers
    (finite, as many as DICOM says) for the numeric attributes; RecordingError naming the tag
    and where it was when it is not one (a text in a DS, NaN in an FL)."""
    if keyword == "PixelIntensityRelationship":
        return str(value).strip().upper()
    numbers = _as_numbers(value)
    wanted = _VALUES.get(keyword, 1)
    if numbers is None or len(numbers) != wanted:
        raise RecordingError(
            f"{path}: {keyword} {value!r} in its functional groups ({macro}) is not"
            f" {'a number' if wanted == 1 else f'{wanted} numbers'}"
        )
    if keyword == "PixelIntensityRelationshipSign":
        if numbers[0] not in (1.0, -1.0):
            raise RecordingError(
                f"{path}: {keyword} {value!r} in its functional groups ({macro}) is not +1 or -1"
            )
        return int(numbers[0])
    values = [pydicom.valuerep.DSfloat(v, auto_format=True) for v in numbers]
    return values if wanted > 1 else values[0]


def _differ(keyword: str, first, values: list) -> bool:
    """Whether per-frame ``values`` of ``keyword`` differ from the first frame's beyond what
    :data:`_ONE_PER_RUN` or :data:`_ANGLE_TOLERANCE_DEG` allows."""
    if keyword not in _ONE_PER_RUN:  # an angle: 179.8 and -179.9 are 0.3 degrees apart
        return any(
            abs((float(v) - float(first) + 180.0) % 360.0 - 180.0) > _ANGLE_TOLERANCE_DEG for v in values
        )
    relative = _ONE_PER_RUN[keyword]
    if relative is None:
        return any(v != first for v in values)
    ones = np.atleast_1d(np.asarray(first, float))
    return any(
        np.any(np.abs(np.atleast_1d(np.asarray(v, float)) - ones) > relative * np.abs(ones)) for v in values
    )


def _lift_functional_groups(path: Path, ds: Dataset) -> tuple[str, ...]:
    """Set on ``ds`` (the header as read, in place) each attribute of :data:`_GROUP_ATTRIBUTES`
    that its top level lacks and its functional groups give: from the shared groups, else from
    the first frame's, each checked (:func:`_checked`). Returns what had to be chosen, for the
    operator: angles whose frames differ (the first frame's taken), frames that give none, a
    per-frame sequence that is not one item a frame. Frames that differ in scale, distances or
    intensity relationship are refused (RecordingError): one run is read with one of each."""
    shared_items = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_items[0] if shared_items else None
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    notes = []
    frames = _number_of_frames(ds)
    if per_frame and len(per_frame) != frames:
        notes.append(
            f"its PerFrameFunctionalGroupsSequence has {len(per_frame)} items for its {frames} frames"
            " (one a frame in DICOM): its frames' own times are not read, and its groups are the"
            " first item's"
        )
    for macro, keyword, read_as in _GROUP_ATTRIBUTES:
        if ds.get(read_as) not in (None, ""):
            continue  # the top level says: as for any XA object
        value = _macro_value(shared, macro, keyword)
        if keyword in _ANGLES and value is not None and _as_numbers(value) is None:
            notes.append(f"its {keyword} {value!r} ({macro}) is not a number: not read")
            continue  # as at the top level: no angle, so no plane from it
        if value is not None:
            value = _checked(path, macro, keyword, value)
        elif per_frame:
            raw = [v for v in (_macro_value(item, macro, keyword) for item in per_frame) if v is not None]
            if keyword in _ANGLES and any(_as_numbers(v) is None for v in raw):
                notes.append(f"its frames' {keyword} ({macro}) is not a number in some: not read")
                continue
            given = [_checked(path, macro, keyword, v) for v in raw]
            if not given:
                continue
            value = given[0]
            if _differ(keyword, value, given[1:]):
                if keyword in _ONE_PER_RUN:
                    raise RecordingError(
                        f"{path}: its frames differ in {keyword} ({macro} of the"
                        " PerFrameFunctionalGroupsSequence): one run is read with one scale and one"
                        " intensity relationship; split the run where it changes"
                    )
                low, high = min(float(v) for v in given), max(float(v) for v in given)
                notes.append(
                    f"its frames differ in {keyword} ({low:g} to {high:g}), in their functional"
                    f" groups: the first frame's {value} is used for the whole run"
                )
            if len(given) < len(per_frame):
                notes.append(
                    f"{len(per_frame) - len(given)} of its {len(per_frame)} frames give no {keyword}"
                    f" in their functional groups: the first frame's {value} is used for them"
                )
        if value is not None:
            setattr(ds, read_as, value)
    return tuple(notes)


def _stamped(ds: Dataset) -> bool:
    """Whether the first frame's Frame Content gives an acquisition or reference stamp."""
    items = ds.get("PerFrameFunctionalGroupsSequence")
    content = items[0].get("FrameContentSequence") if items else None
    return bool(content) and any(
        content[0].get(k) for k in ("FrameAcquisitionDateTime", "FrameReferenceDateTime")
    )


def _longest_rising(indices: list[int], t: np.ndarray) -> list[int]:
    """The longest run of ``indices`` (in order) whose times ``t[i]`` strictly rise: the stamps
    that agree with each other; the rest are out of order (patience sorting, n log n)."""
    tails: list[float] = []  # the smallest last time of a rising run of each length
    ends: list[int] = []  # ... and the position (in ``indices``) it ends at
    before = [-1] * len(indices)  # each position's predecessor in its best run
    for k, i in enumerate(indices):
        at = bisect.bisect_left(tails, t[i])
        before[k] = ends[at - 1] if at else -1
        if at == len(tails):
            tails.append(t[i])
            ends.append(k)
        else:
            tails[at], ends[at] = t[i], k
    run, k = [], ends[-1] if ends else -1
    while k >= 0:
        run.append(indices[k])
        k = before[k]
    return run[::-1]


def _per_frame_times(ds: Dataset, n_frames: int) -> tuple[np.ndarray | None, str | None]:
    """Frame times (s from the first frame) from each frame's FrameContentSequence (Enhanced
    XA/XRF: FrameAcquisitionDateTime, else FrameReferenceDateTime), when the run's stamps are
    to 10 ms or finer (a stamp on a whole second may drop its fraction). Each stamp is its
    frame's own time: one missing, or out of order with the rest (not in the longest run of
    stamps that rises: :func:`_longest_rising`), is placed between its good neighbours by
    frame (at the ends, the median step on), when at least half are good, and that is said as
    for a FrameTimeVector; the rest keep their own times, so one bad stamp moves no other."""
    items = ds.get("PerFrameFunctionalGroupsSequence")
    if not items or len(items) != n_frames or n_frames < 2:
        return None, None
    for keyword in ("FrameAcquisitionDateTime", "FrameReferenceDateTime"):
        stamps: list[dt.datetime | None] = []
        finest = np.inf
        for item in items:
            content = item.get("FrameContentSequence")
            value = str(content[0].get(keyword, "") or "").strip() if content else ""
            try:
                fields, resolution = _dt_fields(value)
                stamp = dt.datetime(*fields)
            except ValueError:
                stamp = None
            else:
                finest = min(finest, resolution)
            stamps.append(stamp)
        if finest > _FRAME_STAMP_RESOLUTION_S:
            continue
        zones = [s.tzinfo for s in stamps if s is not None and s.tzinfo is not None]
        if zones:  # one clock: zoned stamps in the first one's zone, unzoned ones as written
            stamps = [
                None if s is None else s.astimezone(zones[0]).replace(tzinfo=None) if s.tzinfo else s
                for s in stamps
            ]
        known = [i for i, s in enumerate(stamps) if s is not None]
        if len(known) < n_frames / 2:
            continue
        origin = stamps[known[0]]
        t = np.array([np.nan if s is None else (s - origin).total_seconds() for s in stamps])
        good = np.zeros(n_frames, bool)
        good[_longest_rising(known, t)] = True
        index = np.arange(n_frames)
        while good.sum() >= 2:  # a first or last stamp far off (a typo) rises with the rest
            kept = np.flatnonzero(good)
            steps = np.diff(t[kept]) / np.diff(kept)
            if steps[0] > _FAR_STEP_S:
                good[kept[0]] = False
            elif steps[-1] > _FAR_STEP_S:
                good[kept[-1]] = False
            else:
                break
        if good.sum() < max(2, n_frames / 2):
            continue
        steps = np.diff(t[good]) / np.diff(index[good])
        usual = float(np.median(steps))
        first, final = np.flatnonzero(good)[[0, -1]]
        times = np.interp(index, index[good], t[good])
        times[:first] = t[first] - usual * (first - index[:first])
        times[final + 1 :] = t[final] + usual * (index[final + 1 :] - final)
        times -= times[0]
        if good.all():
            return times, f"{keyword} of each frame"
        bad = np.flatnonzero(~good)
        frames = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
        return (
            times,
            f"{keyword} of each frame (the stamp of frame {frames} missing or out of order, not a"
            " time: placed between its neighbours)",
        )
    return None, None


def _frame_times(ds: Dataset, n_frames: int) -> tuple[np.ndarray | None, str | None]:
    vector = ds.get("FrameTimeVector")
    if vector is not None and len(vector) == n_frames:
        increments = np.asarray([float(v) for v in vector], dtype=float)
        increments[0] = 0.0
        if np.all(increments[1:] > 0):
            return np.cumsum(increments) / 1000.0, "FrameTimeVector"
        steps = increments[1:]
        timed = np.isfinite(steps) & (steps > 0)
        if timed.sum() >= max(1, steps.size // 2):
            # A step of zero (or less) is no frame's: it is taken as the usual step, and the rest
            # of the vector kept. Dropping the whole vector for the nominal FrameTime hid a 1 s
            # pause elsewhere in it (an independent test, session 72); said (timing_source).
            bad = np.flatnonzero(~timed) + 1
            increments[bad] = float(np.median(steps[timed]))
            frames = ", ".join(str(int(i)) for i in bad[:5]) + (", ..." if bad.size > 5 else "")
            return (
                np.cumsum(increments) / 1000.0,
                f"FrameTimeVector (its step to frame {frames} not a time: taken as the median step)",
            )
    per_frame = _per_frame_times(ds, n_frames)
    if per_frame[0] is not None:
        return per_frame
    frame_time = _float(ds, "FrameTime")
    if frame_time and frame_time > 0:
        return np.arange(n_frames) * frame_time / 1000.0, "FrameTime"
    rate = _float(ds, "CineRate") or _float(ds, "RecommendedDisplayFrameRate")
    if rate and rate > 0:
        return np.arange(n_frames) / rate, "CineRate"
    return None, None


def _info_from_header(path: Path, ds: Dataset, ds_frames: int, plane: str | None) -> RecordingInfo:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if not photometric:
        raise RecordingError(f"{path}: missing PhotometricInterpretation (0028,0004)")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise RecordingError(
            f"{path}: colour image (PhotometricInterpretation {photometric}, "
            f"{samples} samples per pixel); fluoroscopy must be monochrome"
        )
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits_allocated = int(ds.BitsAllocated)
        bits_stored = int(ds.get("BitsStored", bits_allocated))
    except (AttributeError, TypeError, ValueError):
        raise RecordingError(f"{path}: missing Rows, Columns or BitsAllocated") from None
    if rows < 16 or columns < 16:
        raise RecordingError(f"{path}: image of {rows}x{columns} pixels is too small")
    if bits_allocated not in (8, 16) or not 1 <= bits_stored <= bits_allocated:
        raise RecordingError(
            f"{path}: {bits_stored} bits stored in {bits_allocated} allocated is not supported"
        )
    high_bit = _float(ds, "HighBit")
    if high_bit is not None and int(high_bit) != bits_stored - 1:
        raise RecordingError(
            f"{path}: HighBit (0028,0102) {int(high_bit)} with BitsStored {bits_stored}: the values are"
            f" not in the low {bits_stored} bits (XA and RF require HighBit = BitsStored - 1), so they"
            " would be misread"
        )
    enhanced = str(ds.get("SOPClassUID", "")) in ENHANCED_STORAGE or "SharedFunctionalGroupsSequence" in ds
    # an Enhanced file's source-to-patient distance is its X-Ray Geometry's isocentre one unless
    # its top level gives DistanceSourceToPatient itself: messages name the tag it came from
    sod_tag = SOURCE_TO_PATIENT_TAG
    if enhanced and ds.get("DistanceSourceToPatient") in (None, ""):
        sod_tag = ISOCENTRE_TAG
    notes = _lift_functional_groups(path, ds) if enhanced else ()
    angle = _float(ds, "PositionerPrimaryAngle")
    if plane is None and angle is not None:
        plane = plane_from_angle(angle)
    relationship = ds.get("PixelIntensityRelationship")
    relationship = str(relationship).strip().upper() if relationship else None
    sign = ds.get("PixelIntensityRelationshipSign")
    frame_times, timing_source = _frame_times(ds, ds_frames)
    if frame_times is None and enhanced and _stamped(ds):
        notes = (
            *notes,
            "its frames' own acquisition stamps (Frame Content) do not time it: coarser than 10 ms,"
            " fewer than half of them in order, or not one a frame",
        )
    slope, intercept = _float(ds, "RescaleSlope"), _float(ds, "RescaleIntercept")
    rescale = (slope if slope is not None else 1.0, intercept if intercept is not None else 0.0)
    if rescale[0] <= 0:
        raise RecordingError(f"{path}: RescaleSlope (0028,1053) {rescale[0]:g} is not positive")
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    starts = run_starts(ds)
    return RecordingInfo(
        path=path,
        rows=rows,
        columns=columns,
        n_frames=ds_frames,
        bits_stored=bits_stored,
        bits_allocated=bits_allocated,
        photometric=photometric,
        intensity_relationship=relationship,
        intensity_sign=int(sign) if sign in (1, -1) else None,
        plane=plane,
        primary_angle_deg=angle,
        geometry=_geometry(ds, sod_tag),
        frame_times_s=frame_times,
        timing_source=timing_source,
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)),
        sop_class=str(ds.get("SOPClassUID", "")),
        modality=str(ds.get("Modality", "")),
        secondary_angle_deg=_float(ds, "PositionerSecondaryAngle"),
        signed=signed,
        rescale=None if rescale == (1.0, 0.0) else rescale,
        functional_groups=enhanced,
        modality_lut="ModalityLUTSequence" in ds,
        header_notes=notes,
        starts=starts,
    )


def run_starts(ds: Dataset) -> tuple[RunStart, ...]:
    """When the image's run began, by each family of tags that says, the acquisition's first:
    AcquisitionDateTime, else AcquisitionDate with AcquisitionTime; then ContentDate with
    ContentTime (for a multi-frame XA or RF object, the start of the run; elsewhere possibly
    when it was stored). Only a date with a time to the second is taken: a time without its
    date cannot tell a run at 23:59 from one at 00:01, and a minute is longer than most runs.
    A zone, where the DT value or TimezoneOffsetFromUTC (0008,0201) gives one, is kept (the
    datetime is then aware). Two runs are paired only by one family both give
    (:class:`monitor.io.sources.DicomPairSource`): a content time may be a storage time."""
    zone = str(ds.get("TimezoneOffsetFromUTC", "") or "").strip()
    found = []
    stamp = str(ds.get("AcquisitionDateTime", "") or "").strip()
    candidates = [("acquisition", "AcquisitionDateTime", stamp)]
    for family, date_tag, time_tag in (
        ("acquisition", "AcquisitionDate", "AcquisitionTime"),
        ("content", "ContentDate", "ContentTime"),
    ):
        date = str(ds.get(date_tag, "") or "").strip()
        time_of_day = str(ds.get(time_tag, "") or "").strip().replace(":", "")
        candidates.append((family, f"{date_tag}/{time_tag}", date + time_of_day if len(date) == 8 else ""))
    for family, tags, value in candidates:
        if any(f.family == family for f in found):
            continue
        try:
            fields, resolution = _dt_fields(value)
            when = dt.datetime(*fields)  # a month 13 or a second 60 is no date and time
        except ValueError:
            continue
        if when.tzinfo is None and zone:
            with contextlib.suppress(ValueError):  # a zone that is none: the time as written
                when = when.replace(tzinfo=_dt_zone(zone))
        found.append(RunStart(family, tags, when, resolution))
    return tuple(found)


def dicom_datetime(when: dt.datetime) -> str:
    """A DICOM DT value, to the microsecond, with its zone where ``when`` has one."""
    zone = when.strftime("%z") if when.tzinfo is not None else ""
    return when.strftime("%Y%m%d%H%M%S.%f") + zone


def _dt_fields(value: str) -> tuple[tuple, float]:
    """The fields of a DICOM DT value YYYYMMDDHHMMSS[.F{1,6}][&ZZXX] (seconds required), for
    :class:`datetime.datetime`, and the stamp's resolution (s: 1 for whole seconds, 0.01 for two
    decimals); ValueError when it is not one."""
    zone = None
    for sign in "+-":
        if sign in value[8:]:
            value, offset = value[:8] + value[8:].split(sign)[0], sign + value[8:].split(sign)[1]
            zone = _dt_zone(offset)
            break
    whole, _, fraction = value.partition(".")
    if len(whole) != 14 or not whole.isdigit() or (fraction and not fraction.isdigit()):
        raise ValueError(f"not a date and time to the second: {value!r}")
    micro = int((fraction + "000000")[:6]) if fraction else 0
    fields = [int(whole[0:4]), int(whole[4:6]), int(whole[6:8]), int(whole[8:10]), int(whole[10:12])]
    resolution = 10.0 ** -min(len(fraction), 6) if fraction else 1.0
    return (*fields, int(whole[12:14]), micro, zone), resolution


def _dt_zone(offset: str) -> dt.timezone:
    """A DICOM zone "+HHMM" or "-HHMM"; ValueError when it is not one."""
    sign, digits = offset[:1], offset[1:]
    if sign not in "+-" or len(digits) != 4 or not digits.isdigit():
        raise ValueError(f"time zone {offset!r}")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return dt.timezone(dt.timedelta(minutes=minutes if sign == "+" else -minutes))


def _check_pixel_length(path: Path, ds: Dataset, info: RecordingInfo) -> None:
    """Catch a truncated file up front rather than at frame 237 of a live replay."""
    if UID(info.transfer_syntax).is_compressed or UID(info.transfer_syntax).is_deflated:
        return
    expected = info.rows * info.columns * info.n_frames * info.bits_allocated // 8
    size = _pixel_data_length(path)
    if size is not None and size < expected:
        raise RecordingError(
            f"{path}: truncated: pixel data holds {size} of {expected} bytes "
            f"({size * 8 // (info.rows * info.columns * info.bits_allocated)} of "
            f"{info.n_frames} frames)"
        )


def _pixel_data_length(path: Path) -> int | None:
    """Bytes of native pixel data actually present in the file: the element's own length,
    or less when the file ends first (truncated). Elements after it (trailing padding) do
    not count."""
    with open(path, "rb") as fh:
        try:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
        except Exception:  # the full read already succeeded; be conservative
            return None
        start = fh.tell()
        syntax = UID(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))
        # Pixel Data element header: tag (4) + length (4) implicit; + VR (2) + reserved (2) explicit.
        header = 8 if syntax.is_implicit_VR else 12
        raw = fh.read(header)
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
    present = max(end - start - header, 0)
    if len(raw) < header:
        return present
    declared = int.from_bytes(raw[-4:], "big" if not syntax.is_little_endian else "little")
    return present if declared == 0xFFFFFFFF else min(declared, present)


def _open_series(folder: Path, plane: str | None) -> Recording:
    images: list[tuple[Path, Dataset]] = []
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError):
            continue  # DICOMDIR listings, notes and other non-images are not frames
        if "Rows" not in ds:
            continue
        images.append((f, ds))
    if not images:
        raise RecordingError(f"{folder}: no DICOM images in this folder")
    _one_series(folder, [ds for _, ds in images])
    keys = _frame_order(folder, [ds for _, ds in images])
    headers = sorted(((k, f, ds) for k, (f, ds) in zip(keys, images, strict=True)), key=lambda h: h[0])
    first_path, first = headers[0][1], headers[0][2]
    for _, f, ds in headers:
        if _number_of_frames(ds) != 1:
            raise RecordingError(f"{f}: a multi-frame object inside a series folder; open it on its own")
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise RecordingError(
                f"{f}: frame size {ds.Rows}x{ds.Columns} differs from "
                f"{first.Rows}x{first.Columns} in {first_path.name}; frames must all be one size"
            )
    info = _info_from_header(folder, first, ds_frames=len(headers), plane=plane)
    if info.frame_times_s is None:
        times = [_acquisition_seconds(ds) for _, _, ds in headers]
        if all(t is not None for t in times) and len(set(times)) == len(times):
            t = np.asarray(times) - times[0]
            if np.all(np.diff(t) > 0):
                info = replace(info, frame_times_s=t, timing_source="AcquisitionTime")
    return Recording(info, frame_files=[f for _, f, _ in headers])


def _one_series(folder: Path, datasets: list[Dataset]) -> None:
    """Refuse a folder holding more than one series (SeriesInstanceUID), naming each with its
    images and plane. A PACS export puts a study's series side by side: read as one, both planes
    in one folder interleaved lateral frames into the AP stream (a false high venous alarm), and
    two lateral runs a false 5 mm alarm (an independent test, session 72)."""
    series: dict[str, list[Dataset]] = {}
    for ds in datasets:
        series.setdefault(str(ds.get("SeriesInstanceUID", "") or ""), []).append(ds)
    if len(series) < 2:
        return

    def described(uid: str, members: list[Dataset]) -> str:
        angle = _float(members[0], "PositionerPrimaryAngle")
        plane = plane_from_angle(angle) if angle is not None else None
        number = members[0].get("SeriesNumber", None)
        name = f"series {number}" if number not in (None, "") else f"series {uid or '(no UID)'}"
        return f"{name}: {len(members)} image(s)" + (f", {plane}" if plane else "")

    parts = "; ".join(described(uid, members) for uid, members in series.items())
    raise RecordingError(
        f"{folder}: holds {len(series)} series ({parts}); give a folder holding one series, one plane's run"
    )


def _frame_order(folder: Path, datasets: list[Dataset]) -> list[float]:
    """Each image's sort key: its InstanceNumber where every image has a distinct one, else its
    acquisition time (AcquisitionDateTime, AcquisitionTime or ContentTime) where every image has
    a distinct one; else the order cannot be told, and the folder is refused. File names are no
    order: a PACS names files by their UIDs (an independent test, session 72, played such a
    series in name order, its 5 mm rule never evaluated)."""
    for keys in (
        [_float(ds, "InstanceNumber") for ds in datasets],
        [_acquisition_seconds(ds) for ds in datasets],
    ):
        if all(k is not None for k in keys) and len(set(keys)) == len(keys):
            return keys
    if len(datasets) == 1:
        return [0.0]
    raise RecordingError(
        f"{folder}: the frames' order cannot be told: InstanceNumber (0020,0013) is missing or"
        " repeated, and so is the acquisition time (AcquisitionDateTime, AcquisitionTime or"
        " ContentTime)"
    )


def _acquisition_seconds(ds: Dataset) -> float | None:
    stamp = str(ds.get("AcquisitionDateTime", "") or "")
    if len(stamp) >= 14:  # YYYYMMDDHHMMSS[.ffffff][&ZZXX]: the time of day after the date
        value = stamp[8:].split("+")[0].split("-")[0]
    else:
        value = str(ds.get("AcquisitionTime", "") or ds.get("ContentTime", "") or "")
    if len(value) < 6:
        return None
    try:
        return int(value[0:2]) * 3600 + int(value[2:4]) * 60 + float(value[4:])
    except ValueError:
        return None


# ---------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class WriteOptions:
    """Header content for a written recording: what a C-arm would put there."""

    plane: str
    geometry: Geometry
    frame_time_ms: float
    bits_stored: int
    photometric: str = "MONOCHROME2"
    intensity_relationship: str = "LIN"
    compression: str = "none"
    patient_name: str = "ANONYMOUS"
    patient_id: str = "ANON"
    series_description: str = ""
    manufacturer: str = ""
    uid_seed: str | None = None  # deterministic UIDs when given
    kvp: float | None = None
    # when the run's first frame was acquired: written as a C-arm writes it (AcquisitionDateTime,
    # the acquisition, content, series and study dates and times), so that a lateral and an AP
    # run pair on one clock; None writes no date or time
    started: dt.datetime | None = None
    extra: dict = field(default_factory=dict)


def write_recording(path: str | os.PathLike, frames: np.ndarray, opts: WriteOptions) -> Path:
    """Write frames (N, rows, columns) as an XA multi-frame object.

    MONOCHROME1 is not allowed in the XA IOD, so those recordings are written as
    Radio-Fluoroscopic (RF) objects, which allow it.
    """
    # Over 60 lines on purpose: the inputs checked, then the file meta and the attributes one
    # statement each (identifiers, patient, series and equipment; image pixel and frames; cine
    # timing; geometry and exposure), then the pixels stored and the file saved.
    path = Path(path)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (N, rows, columns), got shape {frames.shape}")
    if opts.plane not in PLANES:
        raise ValueError(f"plane must be one of {PLANES}")
    if opts.compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}")
    bits_allocated = 8 if frames.dtype == np.uint8 else 16
    if frames.dtype not in (np.uint8, np.uint16):
        raise ValueError("frames must be uint8 or uint16")
    if int(frames.max(initial=0)) >= 2**opts.bits_stored:
        raise ValueError(f"pixel values exceed {opts.bits_stored} bits stored")

    def uid(tag: str) -> UID:
        if opts.uid_seed is None:
            return generate_uid()
        return generate_uid(entropy_srcs=[opts.uid_seed, tag])

    sop_class = XA_IMAGE_STORAGE if opts.photometric == "MONOCHROME2" else RF_IMAGE_STORAGE
    sop_instance = uid(f"sop-{opts.plane}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["vertebroplasty-monitor"])

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid(f"series-{opts.plane}")
    ds.FrameOfReferenceUID = uid("frame-of-reference")
    ds.Modality = "XA" if sop_class == XA_IMAGE_STORAGE else "RF"
    ds.PatientName = opts.patient_name
    ds.PatientID = opts.patient_id
    ds.StudyID = "1"
    ds.SeriesNumber = 1 if opts.plane == "lateral" else 2
    ds.InstanceNumber = 1
    ds.SeriesDescription = opts.series_description or f"{opts.plane} fluoroscopy"
    ds.Manufacturer = opts.manufacturer
    ds.BodyPartExamined = "SPINE"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]

    n, rows, cols = frames.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = opts.photometric
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = n
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = opts.bits_stored
    ds.HighBit = opts.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = opts.intensity_relationship
    # +1: higher values mean more X-ray intensity (brighter); MONOCHROME1 stores the inverse.
    ds.PixelIntensityRelationshipSign = 1 if opts.photometric == "MONOCHROME2" else -1

    ds.FrameTime = f"{opts.frame_time_ms:.4f}"
    ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")
    ds.CineRate = round(1000.0 / opts.frame_time_ms)
    ds.RecommendedDisplayFrameRate = round(1000.0 / opts.frame_time_ms)

    g = opts.geometry
    if g.imager_pixel_spacing_mm is not None:
        ds.ImagerPixelSpacing = [f"{g.imager_pixel_spacing_mm[0]:.6f}", f"{g.imager_pixel_spacing_mm[1]:.6f}"]
    if g.source_to_detector_mm is not None:
        ds.DistanceSourceToDetector = f"{g.source_to_detector_mm:.2f}"
    if g.source_to_patient_mm is not None:
        ds.DistanceSourceToPatient = f"{g.source_to_patient_mm:.2f}"
    if g.estimated_magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = f"{g.estimated_magnification:.6f}"
    ds.PositionerPrimaryAngle = "90" if opts.plane == "lateral" else "0"
    ds.PositionerSecondaryAngle = "0"
    if opts.kvp is not None:
        ds.KVP = f"{opts.kvp:g}"
    if opts.started is not None:
        ds.AcquisitionDateTime = dicom_datetime(opts.started)
        date, time_of_day = opts.started.strftime("%Y%m%d"), opts.started.strftime("%H%M%S.%f")
        ds.AcquisitionDate = ds.ContentDate = ds.SeriesDate = ds.StudyDate = date
        ds.AcquisitionTime = ds.ContentTime = ds.SeriesTime = ds.StudyTime = time_of_day
    for keyword, value in opts.extra.items():
        setattr(ds, keyword, value)

    data = np.ascontiguousarray(frames)
    if opts.compression == "none":
        ds.PixelData = data.tobytes()
        ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    else:
        ds.compress(COMPRESSIONS[opts.compression], data, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def describe_recording(path: Path, plane: str | None = None) -> str:
    """What `monitor info` says of a recording: plane, frames, pixels, timing, scale, encoding."""

    with open_recording(path, plane=plane) as rec:
        i = rec.info
        rate = f"{i.frame_rate:.2f} frames/s from {i.timing_source}" if i.frame_rate else "no timing"
        try:
            sr, sc = i.spacing_at_vertebra_mm()
            scale = (
                f"{sr:.4f} x {sc:.4f} mm/pixel at the vertebra (magnification {i.geometry.magnification:.3f})"
            )
        except MissingGeometryError as e:
            scale = f"pixels only: {e}"
        return "\n".join(
            [
                f"{path}",
                f"  plane        {i.plane or 'unknown'}"
                + (
                    f" (PositionerPrimaryAngle {i.primary_angle_deg:g})"
                    if i.primary_angle_deg is not None
                    else ""
                ),
                f"  frames       {i.n_frames} of {i.rows}x{i.columns}, "
                f"{i.bits_stored} of {i.bits_allocated} bits",
                f"  pixels       {i.photometric}, "
                f"{i.intensity_relationship or 'intensity relationship not given (read as LOG)'}"
                + (f", sign {i.intensity_sign:+d}" if i.intensity_sign is not None else "")
                + (
                    f" (higher values read as less intensity, as {i.analysis_photometric})"
                    if i.analysis_photometric != i.photometric
                    else ""
                )
                + (", signed" if i.signed else "")
                + (f", rescaled x{i.rescale[0]:g} {i.rescale[1]:+g}" if i.rescale else ""),
                f"  timing       {rate}",
                "  started      "
                + (
                    f"{i.started:%Y-%m-%d %H:%M:%S.%f}"[:-3]
                    + f"{i.started:%z} from {i.started_from}"
                    + (f" (to {i.starts[0].resolution_s:g} s)" if i.starts[0].resolution_s >= 0.05 else "")
                    if i.started is not None
                    else "no acquisition date and time (a lateral and an AP run pair from their first frames)"
                ),
                f"  scale        {scale}",
                f"  encoding     {i.modality} {i.transfer_syntax}"
                + (" (functional groups read too)" if i.functional_groups else ""),
                *(f"  note         {note}" for note in i.header_notes),
            ]
        )
