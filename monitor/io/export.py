"""A logged session as standard DICOM: one multi-frame file per plane.

``monitor export SESSION OUT`` writes OUT/lateral.dcm and OUT/ap.dcm (XA, or RF
for MONOCHROME1) with the frames exactly as received, JPEG-LS lossless, the
geometry they came with, and the session's facts (patient reference,
operator, room, date). With ``deidentify`` the files are de-identified per
DICOM PS3.15 Annex E, Basic Application Level Confidentiality Profile: the
attributes that profile lists are removed, emptied or replaced, UIDs are
replaced consistently, private attributes are removed, and the file says so
(PatientIdentityRemoved, DeidentificationMethod and its code sequence).
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from monitor import __version__
from monitor.errors import MonitorError
from monitor.io.dicom import Geometry, WriteOptions, dicom_datetime, write_recording
from monitor.io.store import SessionStore
from monitor.messages import PLANES

# PS3.15 Table E.1-1, Basic Profile actions for the attributes a C-arm recording
# or this monitor may carry: X remove, Z empty, D dummy value, U new UID.
BASIC_PROFILE = {
    "AccessionNumber": "Z",
    "AcquisitionDate": "X",
    "AcquisitionDateTime": "X",
    "AcquisitionTime": "X",
    "AdditionalPatientHistory": "X",
    "ContentDate": "Z",
    "ContentTime": "Z",
    "DeviceSerialNumber": "X",
    "FrameOfReferenceUID": "U",
    "ImageComments": "X",
    "InstanceCreationDate": "X",
    "InstanceCreationTime": "X",
    "InstitutionAddress": "X",
    "InstitutionName": "X",
    "InstitutionalDepartmentName": "X",
    "OperatorsName": "X",
    "OtherPatientIDs": "X",
    "OtherPatientNames": "X",
    "PatientAge": "X",
    "PatientBirthDate": "Z",
    "PatientComments": "X",
    "PatientID": "Z",
    "PatientName": "Z",
    "PatientSex": "Z",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PerformedProcedureStepDescription": "X",
    "PerformingPhysicianName": "X",
    "PhysiciansOfRecord": "X",
    "ReferringPhysicianName": "Z",
    "RequestingPhysician": "X",
    "SeriesDate": "X",
    "SeriesDescription": "X",
    "SeriesInstanceUID": "U",
    "SeriesTime": "X",
    "SOPInstanceUID": "U",
    "StationName": "X",
    "StudyDate": "Z",
    "StudyDescription": "X",
    "StudyID": "Z",
    "StudyInstanceUID": "U",
    "StudyTime": "Z",
}


EXPORTED = ("lateral.dcm", "ap.dcm", "report.dcm")  # what an export writes into its directory


def export_session(
    folder: Path, out: Path, deidentify: bool = False, say=print, sr: bool = False
) -> list[Path]:
    """Write one DICOM file per plane the session recorded, and with ``sr`` the session's
    measurements and alarms as a Structured Report referencing them (``monitor.io.sr``);
    returns their paths."""
    if out.exists() and not out.is_dir():
        raise MonitorError(f"{out}: exists and is not a directory")
    stale = [name for name in EXPORTED if (out / name).exists()]
    if stale:  # a mix of two exports (one identified, one not) must never be left behind
        raise MonitorError(f"{out}: already holds an export ({', '.join(stale)}); give a new directory")
    store = SessionStore.open(folder)
    try:
        meta = store.meta()
        records = store.frames_as_sent()  # a frame resent to a restarted logger is its only copy
        if not records:
            raise MonitorError(f"{folder}: the session recorded no frames")
        report = None
        if sr:
            from monitor.audit import audit_json

            report = audit_json(store)
            if not report["levels"]:
                raise MonitorError(f"{folder}: no level was analysed, so there is nothing for --sr to report")
        written, frame_numbers = [], {}
        salt = secrets.token_hex(16)  # one per export: both planes keep sharing their study UID
        for plane in PLANES:
            mine = [r for r in records if r.plane == plane]
            if not mine:
                continue
            shape, count = Counter(tuple(r.body["shape"]) for r in mine).most_common(1)[0]
            if count < len(mine):
                left_out = len(mine) - count
                say(f"{plane}: {left_out} frame(s) of another size left out (size changed mid-stream)")
            mine = [r for r in mine if tuple(r.body["shape"]) == shape]
            frame_numbers[plane] = [(r.body["stream"], r.seq, r.frame) for r in mine]
            frames = np.stack([store.image(r.rec) for r in mine])
            path = out / f"{plane}.dcm"
            write_recording(path, frames, _options(plane, mine, meta))
            _finish(path, meta, mine, salt if deidentify else None)
            say(f"wrote {path}: {len(mine)} frames of {shape[0]}x{shape[1]}")
            written.append(path)
        if report is not None:
            from monitor.io.sr import ExportedFrames, write_sr

            images = {plane: out / f"{plane}.dcm" for plane in frame_numbers}
            exported = {plane: ExportedFrames.of(frames) for plane, frames in frame_numbers.items()}
            path = write_sr(out / "report.dcm", report, images, deidentify, exported)
            say(f"wrote {path}: the measurements and alarms as a DICOM SR (TID 1500)")
            written.append(path)
        return written
    finally:
        store.close()


# The day a de-identified export's runs are dated: no day of the patient's, but the runs keep
# their times on it, so that a lateral and an AP run begun apart still pair when read back
# (PS3.15's Retain Longitudinal Temporal Information with Modified Dates option).
DEIDENTIFIED_DAY = datetime.datetime(1900, 1, 1)


def _options(plane: str, records, meta: dict) -> WriteOptions:
    """How a plane's frames are written back as a recording. Its run begins when its first
    frame was acquired: the session's start plus that frame's time on the source's one clock."""
    first = records[0].body
    times = np.array([r.body["acq_time"] for r in records])
    steps = np.diff(times)
    steps = steps[steps > 0]
    frame_ms = float(np.median(steps) * 1000) if steps.size else 100.0
    return WriteOptions(
        plane=plane,
        geometry=_geometry(first["scale"]),
        frame_time_ms=frame_ms,
        bits_stored=first["bits_stored"],
        photometric=first["photometric"],
        intensity_relationship=first["intensity"] or "LIN",
        compression="jpegls",
        patient_name=str(meta.get("patient") or ""),  # Type 2: empty when not told
        patient_id=str(meta.get("patient") or ""),
        series_description=f"{plane} fluoroscopy, vertebroplasty session {meta.get('session')}",
        manufacturer="vertebroplasty-monitor",
        uid_seed=f"{meta.get('session')}-{meta.get('created')}",
        started=datetime.datetime.fromtimestamp(_created(meta, records), datetime.timezone.utc)
        + datetime.timedelta(seconds=float(first["acq_time"])),
    )


def _created(meta: dict, records) -> float:
    """When the session began (s since the epoch): its log's word, else its first record's."""
    return meta.get("created") or records[0].time


def _geometry(scale: dict | None) -> Geometry:
    if not scale:
        return Geometry()  # pixels only: the file says nothing it does not know
    g = scale.get("geometry")
    if g:
        return Geometry(
            tuple(g["imager_pixel_spacing_mm"]),
            g.get("source_to_detector_mm"),
            g.get("source_to_patient_mm"),
            g.get("estimated_magnification"),
        )
    # A calibration gives the spacing at the vertebra itself: magnification 1 keeps it exact.
    return Geometry(tuple(scale["spacing_mm"]), None, None, 1.0)


def _finish(path: Path, meta: dict, records, deidentify_salt: str | None) -> None:
    """The session's facts into the file, then (optionally) de-identification."""
    ds = pydicom.dcmread(path)
    created = datetime.datetime.fromtimestamp(_created(meta, records), datetime.timezone.utc)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = created.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = created.strftime("%H%M%S")
    if meta.get("operator"):
        ds.OperatorsName = str(meta["operator"])
    if meta.get("room"):
        ds.StationName = str(meta["room"])[:16]
    for unknown in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber"):
        if unknown not in ds:  # Type 2: present, empty when the session was not told
            setattr(ds, unknown, "")
    ds.SoftwareVersions = f"vertebroplasty-monitor {__version__}"
    ds.StudyDescription = "Percutaneous vertebroplasty" + (f" {meta['level']}" if meta.get("level") else "")
    if deidentify_salt is not None:
        deidentify_dataset(ds, deidentify_salt)
        # the run's time on a day that is no one's, so that the planes still pair when read back
        ds.AcquisitionDateTime = dicom_datetime(
            DEIDENTIFIED_DAY + datetime.timedelta(seconds=float(records[0].body["acq_time"]))
        )
        modified = Dataset()
        modified.CodeValue = "113107"
        modified.CodingSchemeDesignator = "DCM"
        modified.CodeMeaning = "Retain Longitudinal Temporal Information Modified Dates Option"
        ds.DeidentificationMethodCodeSequence.append(modified)
        # a second value, not appended text: each of an LO's values holds at most 64 characters
        ds.DeidentificationMethod = [
            ds.DeidentificationMethod,
            "Dates modified, times within the session kept",
        ]
        ds.LongitudinalTemporalInformationModified = "MODIFIED"  # (0028,0303), as the option requires
    ds.save_as(path, enforce_file_format=True)


def deidentify_dataset(ds: Dataset, salt: str) -> None:
    """PS3.15 Basic Profile, in place; UIDs replaced by ones derived from the old UID and a
    secret ``salt`` (so the two planes of one study still share their study UID)."""
    ds.remove_private_tags()
    for keyword, action in BASIC_PROFILE.items():
        if keyword not in ds:
            continue
        if action == "X":
            delattr(ds, keyword)
        elif action == "Z":
            setattr(ds, keyword, "")
        elif action == "U":
            setattr(ds, keyword, _new_uid(str(getattr(ds, keyword)), salt))
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "DICOM PS3.15 Basic Application Level Confidentiality Profile"
    code = Dataset()
    code.CodeValue = "113100"
    code.CodingSchemeDesignator = "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    ds.DeidentificationMethodCodeSequence = [code]


def _new_uid(old: str, salt: str) -> str:
    return generate_uid(entropy_srcs=[hashlib.sha256(f"{salt}:{old}".encode()).hexdigest()])
