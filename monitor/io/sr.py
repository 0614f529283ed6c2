"""A session's QA figures as a DICOM Structured Report, for the PACS and the reporting system.

``monitor export SESSION OUT --sr`` writes OUT/report.dcm beside the exported images: a
Comprehensive 3D SR holding a TID 1500 Measurement Report, built with highdicom (which keeps
the templates, codes and content-tree rules of PS3.16), that references the exported image
series by UID. Per level treated it holds one measurement group:

- the cement volume (SCT 118565006 "Volume", mL), its 68 % interval (two private concepts,
  lower and upper bound) and the volume delivered by syringe;
- the closest the cement front came to the posterior wall (mm; negative is beyond it);

and per alarm a group of its own: when it was raised (seconds from the start of monitoring
of the level), the distance then, when it was acknowledged, whether injection stopped and how
long after, how much went in after it, with the alarm's kind, site and priority as coded
evaluations, citing the frame it was raised on. The vertebral level is each group's coded
finding site (SCT T1-T12, L1-L5 vertebra) when known. Every group names the algorithm (name,
version) and the images it was measured on.

Concepts DICOM has no code for are in the private coding scheme ``99VTBPM`` (PS3.16 8.1
allows "99" private schemes); :data:`CODES` lists them. :func:`read_sr` reads the figures
back, with pydicom only, so that a round trip can be checked against the audit.
"""

from __future__ import annotations

import datetime
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from monitor import __version__

SCHEME = "99VTBPM"  # this monitor's own concepts (private coding scheme, PS3.16 8.1)
CODES = {
    "syringe_volume": Code("SYRINGE-ML", SCHEME, "Cement volume delivered by syringe"),
    "volume_low": Code("VOL-LOW-68", SCHEME, "Cement volume, lower bound of its 68 % interval"),
    "volume_high": Code("VOL-HIGH-68", SCHEME, "Cement volume, upper bound of its 68 % interval"),
    "closest_to_wall": Code("FRONT-WALL-MIN", SCHEME, "Closest distance of cement front to posterior wall"),
    "alarm": Code("ALARM", SCHEME, "Injection alarm"),
    "alarm_time": Code("ALARM-TIME", SCHEME, "Time of alarm from start of monitoring"),
    "alarm_distance": Code("ALARM-DIST", SCHEME, "Distance of cement front to posterior wall at alarm"),
    "acknowledged_after": Code("ACK-AFTER", SCHEME, "Time from alarm to acknowledgement"),
    "stopped": Code("STOPPED", SCHEME, "Injection stopped after alarm"),
    "stopped_after": Code("STOPPED-AFTER", SCHEME, "Time from alarm to stop of injection"),
    "injected_after": Code("INJECTED-AFTER", SCHEME, "Cement volume injected after alarm"),
    "kind": Code("ALARM-KIND", SCHEME, "Alarm kind"),
    "site": Code("ALARM-SITE", SCHEME, "Alarm site"),
    "priority": Code("ALARM-PRIORITY", SCHEME, "Alarm priority"),
}
VALUES = {  # the coded values of kind, site and priority
    "proximity": Code("PROXIMITY", SCHEME, "Cement approaching or within 5 mm of posterior wall"),
    "extravasation": Code("EXTRAVASATION", SCHEME, "Cement leak"),
    "posterior": Code("SITE-POSTERIOR", SCHEME, "Posterior, towards the spinal canal"),
    "venous": Code("SITE-VENOUS", SCHEME, "Venous"),
    "disc": Code("SITE-DISC", SCHEME, "Intervertebral disc"),
    "paravertebral": Code("SITE-PARAVERT", SCHEME, "Paravertebral soft tissue"),  # <= 16 characters
    "high": Code("PRIORITY-HIGH", SCHEME, "High priority"),
    "medium": Code("PRIORITY-MEDIUM", SCHEME, "Medium priority"),
}
UNITS = {"ml": Code("ml", "UCUM", "milliliter"), "mm": codes.UCUM.Millimeter, "s": codes.UCUM.Second}


class NothingToReport(ValueError):
    """A session with no level analysed: an SR would hold no measurement."""


@dataclass(frozen=True)
class ExportedFrames:
    """Where a plane's logged frames went in its exported image: 1-based frame numbers by the
    frame's place in the stream (its run's ``stream`` and sequence number, unique in a session)
    and, for logs whose alarms predate that, by the source's frame index where only one frame
    of the plane carries it. A looped replay, or a source restarted within a session, sends each
    index again: an alarm cited by index alone would point at another pass's frame, so such an
    alarm cites the image without a frame rather than a wrong one."""

    by_sent: dict[tuple[str, int], int]
    by_index: dict[int, int]

    @classmethod
    def of(cls, frames: Sequence[tuple[str, int, int]]) -> ExportedFrames:
        """From the exported frames' (stream, seq, frame index), in the image's order."""
        by_sent = {(stream, seq): n for n, (stream, seq, _index) in enumerate(frames, 1)}
        counts = Counter(index for _stream, _seq, index in frames)
        by_index = {index: n for n, (_s, _q, index) in enumerate(frames, 1) if counts[index] == 1}
        return cls(by_sent, by_index)

    def number(self, alarm: dict) -> int | None:
        """The frame number ``alarm`` (an audit alarm: ``stream``, ``seq``, ``frame``) was raised on."""
        if alarm.get("stream") is not None and alarm.get("seq") is not None:
            return self.by_sent.get((alarm["stream"], alarm["seq"]))
        return self.by_index.get(alarm.get("frame"))


def measurement_report(
    report: dict,
    images: dict[str, pydicom.Dataset],
    deidentified: bool = False,
    frame_numbers: dict[str, ExportedFrames] | None = None,
):
    """The SR of ``report`` (:func:`monitor.audit.audit_json` of the session) referencing the
    exported ``images`` (plane -> its dataset; pixel data not needed). ``frame_numbers``:
    plane -> where its logged frames are in that plane's exported image, for the alarms to
    cite their frame. ``deidentified``: the
    images are de-identified, and the SR must say nothing of the operator or the room, nor
    carry a UID that leads back to the identified export."""
    if not report["levels"]:
        raise NothingToReport("no level was analysed in this session: an SR would hold no measurement")
    algorithm = hd.sr.AlgorithmIdentification("vertebroplasty-monitor", __version__)
    # UIDs from the exported study's UID, itself replaced when de-identified: stable across
    # exports of one session, and unrelated between its identified and de-identified exports
    study = next(iter(images.values())).StudyInstanceUID
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[study, "device"]),
        name="vertebroplasty-monitor",
        manufacturer_name="vertebroplasty-monitor",
        model_name=__version__,
        physical_location=None if deidentified else _text(report.get("room")),
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, device)
    )
    # Each group names the images it was measured on (by SOP instance UID); the evidence
    # sequence lists them too. No image library: its projection descriptors need the
    # patient orientation, which a C-arm recording does not reliably carry.
    sources = [hd.sr.SourceImageForMeasurementGroup.from_source_image(image) for image in images.values()]
    groups = []
    for level in report["levels"]:
        groups.append(_level_group(level, study, algorithm, sources))
        for i, alarm in enumerate(level["alarms"], 1):
            image = images.get(alarm.get("plane"))
            exported = (frame_numbers or {}).get(alarm.get("plane"))
            number = None if exported is None else exported.number(alarm)
            cited = (
                []
                if image is None
                else [
                    hd.sr.SourceImageForMeasurementGroup.from_source_image(
                        image, referenced_frame_numbers=None if number is None else [number]
                    )
                ]
            )
            groups.append(_alarm_group(level, i, alarm, study, algorithm, cited or sources))
    content = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.SCT.Fluoroscopy,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    return _sr_dataset(content, images, report, deidentified)


def _sr_dataset(content, images: dict[str, pydicom.Dataset], report: dict, deidentified: bool):
    """The Comprehensive 3D SR instance around ``content``, in the images' study."""
    first = next(iter(images.values()))
    with warnings.catch_warnings():  # a pseudonymous patient reference is one name component
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        sr = hd.sr.Comprehensive3DSR(
            evidence=list(images.values()),
            content=content,
            series_instance_uid=generate_uid(),  # each export a new instance: its content may differ
            series_number=99,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="vertebroplasty-monitor",
            # PARTIAL for a run stopped before its recording's end: the report covers part of it
            is_complete=bool(report.get("complete")) and not report.get("stopped_early"),
            series_description="Vertebroplasty cement monitor: measurements and alarms",
        )
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: a room or level named outside ASCII
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "Vertebroplasty cement monitor concepts"
    scheme.CodingSchemeResponsibleOrganization = "vertebroplasty-monitor"
    sr.CodingSchemeIdentificationSequence = [scheme]
    if deidentified:  # as the images were (PS3.15 Basic Profile): no date ties it to the patient
        sr.ContentDate, sr.ContentTime = "19000101", "000000"  # Type 1: a dummy value
        for keyword in ("InstanceCreationDate", "InstanceCreationTime"):
            if keyword in sr:
                delattr(sr, keyword)
        for equipment in sr.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in equipment:
                del equipment.ContributionDateTime
        sr.PatientIdentityRemoved = "YES"
        sr.DeidentificationMethod = first.get("DeidentificationMethod", "DICOM PS3.15 Basic Profile")
    return sr


def _text(value) -> str | None:
    return None if value is None else str(value)[:64]


def _tracking(study: str, name: str) -> hd.sr.TrackingIdentifier:
    """A stable identifier: the same export study gives the same UIDs."""
    return hd.sr.TrackingIdentifier(uid=generate_uid(entropy_srcs=[study, name]), identifier=name)


def _sites(level: dict) -> list | None:
    """The treated vertebra as a coded finding site (SCT), when the level is known."""
    code = getattr(codes.SCT, f"{level['level']}Vertebra", None) if level["level"] else None
    return None if code is None else [hd.sr.FindingSite(code)]


def _level_group(level: dict, study: str, algorithm, sources):
    name = f"level {level['level'] or 'not recorded'}"
    measurements = []
    if level["volume_ml"] is not None:
        measurements.append(_measure(codes.SCT.Volume, level["volume_ml"], "ml", algorithm))
    for key in ("volume_low", "volume_high"):
        if level.get(f"{key}_ml") is not None:
            measurements.append(_measure(CODES[key], level[f"{key}_ml"], "ml", algorithm))
    if level["syringe_ml"] is not None:
        measurements.append(_measure(CODES["syringe_volume"], level["syringe_ml"], "ml", algorithm))
    if level["min_distance_mm"] is not None:
        measurements.append(_measure(CODES["closest_to_wall"], level["min_distance_mm"], "mm", algorithm))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(study, name),
        algorithm_id=algorithm,
        finding_sites=_sites(level),
        measurements=measurements or None,
        source_images=sources,
    )


def _alarm_group(level: dict, number: int, alarm: dict, study: str, algorithm, sources):
    name = f"level {level['level'] or 'not recorded'} alarm {number}"
    start = level.get("start_s")
    figures = [
        ("alarm_time", None if start is None else alarm["time_s"] - start, "s"),
        ("alarm_distance", alarm.get("distance_mm"), "mm"),
        ("acknowledged_after", alarm.get("acknowledged_after_s"), "s"),
        # a stop seen only after frames not read has a latest time, not a time: left out
        ("stopped_after", None if alarm.get("stop_unseen_s") else alarm.get("stopped_after_s"), "s"),
        ("injected_after", alarm.get("injected_after_ml"), "ml"),
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(CODES[key], VALUES[alarm[key]])
        for key in ("kind", "site", "priority")
        if alarm.get(key) in VALUES
    ]
    stopped = alarm.get("stopped_after_s") is not None  # not stopped: said, not left out
    evaluations.append(
        hd.sr.QualitativeEvaluation(CODES["stopped"], codes.SCT.Yes if stopped else codes.SCT.No)
    )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(study, name),
        finding_type=CODES["alarm"],
        finding_sites=_sites(level),
        source_images=sources,
        algorithm_id=algorithm,
        measurements=[_measure(CODES[k], v, u, algorithm) for k, v, u in figures if v is not None] or None,
        qualitative_evaluations=evaluations or None,
    )


def _measure(name: Code, value: float, unit: str, algorithm) -> hd.sr.Measurement:
    value = round(float(value), 4)
    return hd.sr.Measurement(name=name, value=value, unit=UNITS[unit], algorithm_id=algorithm)


def write_sr(
    path: Path,
    report: dict,
    image_paths: dict[str, Path],
    deidentified: bool = False,
    frame_numbers: dict[str, ExportedFrames] | None = None,
) -> Path:
    """:func:`measurement_report` of the exported images (plane -> path), written to ``path``."""
    images = {plane: pydicom.dcmread(p, stop_before_pixels=True) for plane, p in image_paths.items()}
    sr = measurement_report(report, images, deidentified, frame_numbers)
    if not deidentified:
        now = datetime.datetime.now()
        sr.ContentDate, sr.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    sr.save_as(path, enforce_file_format=True)
    return path


def read_sr(path: Path) -> dict[str, dict]:
    """The figures of an SR written by :func:`write_sr`, read back with pydicom alone: group
    name (its tracking identifier) -> {concept meaning: value (float, with its unit) or coded
    value's meaning}, plus "algorithm", "algorithm version" and "uid" (its tracking UID)."""
    ds = pydicom.dcmread(path)
    groups: dict[str, dict] = {}
    for item in _items(ds):
        if _concept(item) != "Measurement Group":
            continue
        figures: dict = {}
        for child in _items(item):
            meaning, kind = _concept(child), child.ValueType
            if kind == "TEXT" and meaning == "Tracking Identifier":
                name = child.TextValue
            elif kind == "UIDREF" and meaning == "Tracking Unique Identifier":
                figures["uid"] = child.UID
            elif kind == "NUM":
                value = child.MeasuredValueSequence[0]
                unit = value.MeasurementUnitsCodeSequence[0].CodeValue
                figures[meaning] = (float(value.NumericValue), unit)
            elif kind == "CODE" and meaning != "Finding":
                figures[meaning] = child.ConceptCodeSequence[0].CodeMeaning
            elif kind == "TEXT" and meaning == "Algorithm Name":
                figures["algorithm"] = child.TextValue
            elif kind == "TEXT" and meaning == "Algorithm Version":
                figures["algorithm version"] = child.TextValue
        groups[name] = figures
    return groups


def _items(node):
    """Every content item under ``node``, depth first."""
    for item in node.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _concept(item) -> str | None:
    names = item.get("ConceptNameCodeSequence")
    return names[0].CodeMeaning if names else None
