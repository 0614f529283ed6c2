"""QA audit, HTML report, summary over many sessions, replay of a logged session, DICOM export."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import sqlite3

import cv2
import numpy as np
import pydicom
import pytest

from monitor.audit import reaction
from monitor.io.dicom import open_recording
from monitor.io.sources import DicomPairSource
from monitor.io.store import DB_NAME, SessionStore
from monitor.pipeline import Endpoints, RunSpec, run
from monitor.recordings import default_recording
from monitor.replay import PaceOptions
from tests.conftest import assert_5mm_alarm_on_time, audited, load_truth, monitor_cli

PATIENT, OPERATOR, ROOM = "PSEUDO-4711", "Dr Quinn", "Room 3"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """The bundled posterior-leak case run through the monitor once, logged with its facts."""
    from monitor.io.sources import DicomPairSource

    rec = default_recording()
    folder = tmp_path_factory.mktemp("audit") / "session"
    source = DicomPairSource(rec.lateral, rec.ap)
    meta = {"patient": PATIENT, "operator": OPERATOR, "room": ROOM}
    spec = RunSpec(str(folder), "L1", meta=meta, endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 0
    source.close()
    return folder


def test_audit_json_reports_alarms_and_how_fast_injection_stopped(session):
    done = monitor_cli("audit", session, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["complete"] and report["integrity"]["intact"]
    assert report["stopped_early"] is None  # the recording replayed to its end
    assert (report["patient"], report["operator"], report["room"]) == (PATIENT, OPERATOR, ROOM)
    (level,) = report["levels"]
    assert level["level"] == "L1" and level["cannulas"] == 1
    truth = load_truth(default_recording().lateral.parent)
    assert_alarms_match_truth(level["alarms"], truth)
    injected = [f["injected_ml"] for f in truth["frames"]]
    high = level["alarms"][1]
    # Truth: the first pause in injection after the alarm frame.
    at = high["frame"]
    stop = next(i for i in range(at, 47) if injected[i + 1] == injected[i])
    assert high["stopped_after_s"] == pytest.approx((stop - at) / 7.5, abs=0.3)
    assert high["injected_after_ml"] == pytest.approx(injected[stop] - injected[at], rel=0.3, abs=0.1)
    assert level["volume_ml"] == pytest.approx(truth["total_injected_ml"], rel=0.15)
    assert [f["frame"] for f in level["frames"]] == list(range(48))
    reasons = {(a["kind"], a["priority"]): a["reason"] for a in level["alarms"]}  # said, and logged
    assert reasons[("proximity", "high")] in (
        f"within 5 mm of the wall ({high['distance_mm']:.1f} mm)",
        f"within 5 mm of the wall within the measurement's margin ({high['distance_mm']:.1f} mm read;"
        " alarmed from 5.5 mm)",
    )
    assert reasons[("extravasation", "high")].startswith("leak: posterior")
    text = monitor_cli("audit", session).stdout
    assert f"[{reasons[('proximity', 'high')]}]" in text
    assert level["caveats"] == []  # every frame measured, nothing guessed
    # every frame after the 2-frame baseline checked against both rules, in both planes
    assert report["monitored"] is True and level["monitoring"]["reasons"] == []
    assert level["monitoring"]["planes"] == {
        "lateral": {"frames": 46, "proximity": 1.0, "leak": 1.0, "max_unchecked_s": 0.13},
        "ap": {"frames": 46, "leak": 1.0},
    }


class _Faulty(DicomPairSource):
    """The bundled recording with a blank lateral frame (20) and two blown-out AP frames (30, 31)
    mid-injection."""

    def frames(self):
        from monitor.io.sources import SourceFrame

        for item in super().frames():
            if (item.plane, item.index) == ("lateral", 20):
                item = SourceFrame(item.plane, item.index, item.acq_time, np.zeros_like(item.pixels))
            elif item.plane == "ap" and item.index in (30, 31):
                blown = item.pixels.copy()  # all of frame 30, nine tenths of frame 31
                blown[: len(blown) * (10 if item.index == 30 else 9) // 10] = (
                    2 ** self.formats["ap"].bits_stored - 1
                )
                item = SourceFrame(item.plane, item.index, item.acq_time, blown)
            yield item


def test_audit_says_which_frames_were_not_measured_and_why(tmp_path):
    """A blank lateral frame and two blown-out AP frames mid-injection: the audit lists
    them per plane with their frames and stream times (two saturations, one row), in JSON, text
    and HTML; the alarms are still those of the clean recording."""
    rec = default_recording()
    source = _Faulty(rec.lateral, rec.ap)
    spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 0
    source.close()
    done = monitor_cli("audit", tmp_path / "s", "--json")
    (level,) = json.loads(done.stdout)["levels"]
    assert [(c["plane"], c["first_frame"], c["last_frame"], c["frames"]) for c in level["caveats"]] == [
        ("lateral", 20, 20, 1),
        ("ap", 30, 31, 2),
    ]
    times = {(r["frame"]): r["time_s"] for r in level["frames"]}
    assert [(c["first_s"], c["last_s"]) for c in level["caveats"]] == [
        (times[20], times[20]),
        (times[30], times[31]),
    ]
    assert level["caveats"][0]["status"] == "skipped: blank frame (no contrast)"
    # the skipped frames were not checked, and are counted so; three of 92 leave the level monitored
    assert level["monitoring"]["planes"] == {
        "lateral": {
            "frames": 46,
            "proximity": round(45 / 46, 4),
            "leak": round(45 / 46, 4),
            "max_unchecked_s": 0.27,  # the blank frame: two frame intervals without a check
        },
        "ap": {"frames": 46, "leak": round(44 / 46, 4)},
    }
    assert level["monitoring"]["monitored"] is True
    assert level["caveats"][1]["status"].startswith("skipped: saturated frame")
    assert_alarms_match_truth(level["alarms"], load_truth(rec.lateral.parent))
    text = monitor_cli("audit", tmp_path / "s").stdout
    assert f"NOTE  frames 30-31 ({times[30]:.2f}-{times[31]:.2f} s) ap (2): skipped: saturated frame" in text
    assert monitor_cli("audit", tmp_path / "s", "--html", tmp_path / "a.html").returncode == 0
    page = (tmp_path / "a.html").read_text()
    assert "Measurement caveats" in page and "skipped: blank frame (no contrast)" in page


def assert_alarms_match_truth(alarms: list[dict], truth: dict) -> None:
    """The bundled posterior-leak case: approaching (medium), the 5 mm line (high, not late and
    not false: :func:`assert_5mm_alarm_on_time`), the posterior leak (high, within 2 frames of its
    onset); each once."""
    assert [(a["kind"], a["priority"]) for a in alarms] == [
        ("proximity", "medium"),
        ("proximity", "high"),
        ("extravasation", "high"),
    ]
    assert_5mm_alarm_on_time(alarms[1]["frame"], truth)
    assert 0 <= alarms[2]["frame"] - truth["leak"]["onset_frame"] <= 2 and alarms[2]["site"] == "posterior"


def test_reaction_from_a_volume_curve():
    t = [i / 10 for i in range(40)]
    rising_then_flat = [min(i, 20) * 0.1 for i in range(40)]
    r = reaction(list(zip(t, rising_then_flat, strict=True)), 1.0)
    assert r == {
        "stopped_after_s": 1.0,
        "injected_after_ml": 1.0,
        "total_after_ml": 1.0,
        "stop_unseen_s": 0.0,
    }
    never = [i * 0.1 for i in range(40)]
    r = reaction(list(zip(t, never, strict=True)), 1.0)
    assert r["stopped_after_s"] is None and r["total_after_ml"] == pytest.approx(2.9)
    # a pause, then injection resumed: the stop counts, and the total shows what came after
    resumed = [min(i, 20) * 0.1 + max(0, i - 28) * 0.1 for i in range(40)]
    r = reaction(list(zip(t, resumed, strict=True)), 1.0)
    assert r["stopped_after_s"] == 1.0 and r["total_after_ml"] == pytest.approx(2.1)
    noisy = [v + 0.02 * (-1) ** i for i, v in enumerate(rising_then_flat)]
    assert reaction(list(zip(t, noisy, strict=True)), 1.0)["stopped_after_s"] == pytest.approx(1.0, abs=0.15)


def test_audit_html_is_one_self_contained_file_with_charts_and_key_frames(session, tmp_path):
    out = tmp_path / "audit.html"
    done = monitor_cli("audit", session, "--html", out)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "src='http" not in page and "href=" not in page  # nothing fetched from elsewhere
    assert page.count("<svg") == 2 and "5 mm" in page
    assert page.count("data:image/png;base64,") >= 3  # the three alarm frames, at least
    assert "HIGH extravasation (posterior)" in page and PATIENT in page
    assert "Log complete and intact" in page


def test_the_html_charts_leave_a_gap_where_frames_were_not_read(tmp_path):
    """Fluoroscopy held for 10 frames (lateral and AP frames 20-29 the image of frame 19): the
    frames from half a second after the last exposure are skipped. The HTML's distance chart
    drew one line across them, read as a measured approach (session 77); it now breaks the line
    there and shades the stretch grey, with what was said of it."""
    from tests.test_dicom_variants import rewrite

    def held(ds, frames):
        frames = frames.copy()
        frames[20:30] = frames[19]
        return frames

    rec = default_recording()
    source = DicomPairSource(
        rewrite(rec.lateral, tmp_path / "lateral.dcm", held), rewrite(rec.ap, tmp_path / "ap.dcm", held)
    )
    try:
        spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=Endpoints.private())
        assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 4  # NOT MONITORED
    finally:
        source.close()
    report, page = audited(tmp_path / "s")
    (level,) = report["levels"]
    spans = [(c["first_s"], c["last_s"]) for c in level["caveats"] if c["status"].startswith("skipped")]
    skipped = (min(a for a, _ in spans), max(b for _, b in spans))
    distance_chart = page[page.index("<svg") : page.index("</svg>")]
    shaded = re.findall(r"<rect class='unread' x='([\d.]+)' y='[\d.]+' width='([\d.]+)'", distance_chart)
    assert len(shaded) == len(spans) >= 2 and "image held" in distance_chart  # the lateral's and the AP's
    x_from, width = min(float(x) for x, _ in shaded), max(float(w) for _, w in shaded)
    lines = [
        [float(p.split(",")[0]) for p in points.split()]
        for points in re.findall(r"<polyline points='([^']*)'", distance_chart)
    ]
    assert len(lines) >= 2 and "(grey: frames not read)" in distance_chart
    for xs in lines:  # no segment of a line crosses the stretch not read
        assert not any(a < x_from + width / 2 < b for a, b in zip(xs, xs[1:], strict=False)), (
            xs,
            x_from,
            width,
        )
    measured = [f["time_s"] for f in level["frames"] if f["distance_mm"] is not None]
    assert any(t < skipped[0] for t in measured) and any(t > skipped[1] for t in measured)


def _tampered_copy(session, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(session, copy)
    db = sqlite3.connect(copy / DB_NAME)
    db.execute("DROP TRIGGER journal_append_only_update")
    db.execute(
        'UPDATE journal SET body=replace(body, \'"priority":"high"\', \'"priority":"medium"\') '
        "WHERE kind='alarm'"
    )
    db.commit()
    db.close()
    return copy


def test_audit_reports_a_tampered_log_instead_of_trusting_it(session, tmp_path):
    copy = _tampered_copy(session, tmp_path)
    done = monitor_cli("audit", copy, "--json")
    assert done.returncode == 3
    report = json.loads(done.stdout)
    assert not report["complete"] and not report["integrity"]["intact"]
    assert any("does not match its hash" in p and "alarm" in p for p in report["problems"])


def _rechain(db: sqlite3.Connection) -> None:
    """Recompute every record's hash, as someone who edited the log and knows the scheme would."""
    from monitor.io.store import GENESIS, chain_hash

    previous = GENESIS
    rows = db.execute("SELECT rec, kind, time, plane, seq, frame, level, body FROM journal ORDER BY rec")
    for rec, kind, at, plane, seq, frame, level, body in rows.fetchall():
        previous = chain_hash(previous, rec, kind, at, plane, seq, frame, level, body)
        db.execute("UPDATE journal SET hash=? WHERE rec=?", (previous, rec))


def _forge(session, tmp_path, name: str, how: str):
    copy = tmp_path / name
    shutil.copytree(session, copy)
    db = sqlite3.connect(copy / DB_NAME)
    db.execute("DROP TRIGGER journal_append_only_update")
    db.execute("DROP TRIGGER journal_append_only_delete")
    if how == "edit":  # the high alarms made medium, the chain recomputed: it verifies again
        db.execute(
            'UPDATE journal SET body=replace(body, \'"priority":"high"\', \'"priority":"medium"\') '
            "WHERE kind='alarm'"
        )
        _rechain(db)
    elif how == "in place":  # the same edit, the chain left as it was: the head still matches
        db.execute(
            'UPDATE journal SET body=replace(body, \'"priority":"high"\', \'"priority":"medium"\') '
            "WHERE kind='alarm'"
        )
    elif how == "cut":  # the end of the log deleted: the chain up to there is still intact
        last = db.execute("SELECT MAX(rec) FROM journal").fetchone()[0]
        db.execute("DELETE FROM journal WHERE rec > ?", (last - 40,))
    db.commit()
    db.close()
    if how == "unsigned":
        (copy / "session.head").unlink()
    return copy


@pytest.mark.parametrize(
    "how, said",
    [
        ("edit", "the log was rewritten (its chain recomputed)"),
        ("cut", "records were deleted"),
        ("unsigned", "no signed head"),
    ],
)
def test_a_log_rewritten_with_its_chain_recomputed_is_caught_by_its_signed_head(session, tmp_path, how, said):
    """The red team's forgeries that the plain chain passed as intact (issue 24, D)."""
    copy = _forge(session, tmp_path, how, how)
    assert SessionStore.open(copy).verify(images=False) == []  # the chain alone is fooled
    done = monitor_cli("audit", copy, "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert not report["complete"] and not report["integrity"]["intact"]
    assert any(said in p for p in report["integrity"]["problems"]), report["integrity"]["problems"]


def test_a_head_signed_without_the_installation_key_does_not_verify(session, tmp_path):
    copy = tmp_path / "forged-head"
    shutil.copytree(session, copy)
    head = json.loads((copy / "session.head").read_text())
    head["hmac_sha256"] = "0" * 64
    (copy / "session.head").write_text(json.dumps(head))
    report = json.loads(monitor_cli("audit", copy, "--json").stdout)
    assert report["integrity"]["problems"] == [
        "the signed head does not verify: it was forged or belongs to another session"
    ]


def test_summary_over_sessions_per_operator_and_level_with_csv_and_cache(session, tmp_path):
    from monitor.bench_log import write_fake_session

    root = tmp_path / "sessions"
    shutil.copytree(session, root / "real")
    for i in range(3):
        write_fake_session((root / f"fake-{i}", i))
    (root / "broken").mkdir()
    (root / "broken" / DB_NAME).write_bytes(b"garbage" * 50)
    done = monitor_cli("audit", root, "--summary", "--csv", tmp_path / "summary.csv", "--json")
    assert done.returncode == 3, done.stderr  # the broken log: a script sees it in the status too
    table = json.loads(done.stdout)
    # every closed log's digest, written and signed at its close, is taken: only the broken one is read
    assert table["sessions"] == 5 and table["read"] == 1 and table["from_close"] == 4
    assert [u["folder"] for u in table["unreadable"]] == [str(root / "broken")]
    assert table["untrusted"] == []  # every log's signed head verifies
    ours = next(r for r in table["rows"] if r["operator"] == OPERATOR)
    assert ours["level"] == "L1" and ours["sessions"] == 1 and ours["leaks"] == 1
    truth = load_truth(default_recording().lateral.parent)
    assert ours["alarms_per_level"] == 3.0
    assert ours["volume_median_ml"] == pytest.approx(truth["total_injected_ml"], rel=0.2)
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(table["rows"]) and rows[0].keys() >= {"operator", "level", "median_reaction_s"}
    again = json.loads(monitor_cli("audit", root, "--summary", "--json").stdout)
    assert again["read"] == 0 and again["from_close"] == 0  # every digest from the cache
    assert again["rows"] == table["rows"]
    assert len(again["unreadable"]) == 1
    write_fake_session((root / "fake-new", 7))
    third = json.loads(monitor_cli("audit", root, "--summary", "--json").stdout)
    assert third["from_close"] == 1 and third["sessions"] == 6


def test_export_writes_dicom_with_the_recorded_pixels(session, tmp_path):
    done = monitor_cli("export", session, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    store = SessionStore.open(session)
    recorded = [store.image(r.rec) for r in store.records("frame") if r.plane == "lateral"]
    with open_recording(tmp_path / "out" / "lateral.dcm") as rec:
        assert rec.info.plane == "lateral" and len(rec) == 48
        assert rec.info.spacing_at_vertebra_mm() == pytest.approx((0.3125, 0.3125), abs=1e-4)
        assert all(np.array_equal(rec.frame(i), recorded[i]) for i in (0, 20, 47))
    ds = pydicom.dcmread(tmp_path / "out" / "lateral.dcm", stop_before_pixels=True)
    assert ds.PatientID == PATIENT and ds.OperatorsName == OPERATOR


def test_export_deidentified_leaves_no_identifying_value(session, tmp_path):
    done = monitor_cli("export", session, tmp_path / "plain")
    done = monitor_cli("export", session, tmp_path / "anon", "--deidentify")
    assert done.returncode == 0, done.stderr
    plain = pydicom.dcmread(tmp_path / "plain" / "lateral.dcm")
    anon = [pydicom.dcmread(tmp_path / "anon" / f"{p}.dcm") for p in ("lateral", "ap")]
    for ds in anon:
        values = [str(e.value) for e in ds.iterall() if e.keyword != "PixelData"]
        assert not any(PATIENT in v or OPERATOR in v or ROOM in v for v in values)
        assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == ""
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        # LO: each value 64 characters at most (it held 107: readers warned of invalid DICOM)
        methods = ds["DeidentificationMethod"]
        assert all(len(v) <= 64 for v in (methods.value if methods.VM > 1 else [methods.value])), methods
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID != plain.SOPInstanceUID
        assert "StudyDate" not in ds or ds.StudyDate == ""
    assert anon[0].StudyInstanceUID == anon[1].StudyInstanceUID != plain.StudyInstanceUID
    assert np.array_equal(anon[0].pixel_array, plain.pixel_array)


def test_replay_of_a_logged_session_raises_the_same_alarms(session, tmp_path):
    done = monitor_cli(
        "replay",
        "--session",
        session,
        "--log",
        tmp_path / "again",
        "--headless",
        "--speed",
        "0",
        *_private_endpoints(),
    )
    assert done.returncode == 0, done.stderr
    assert "replaying the logged session" in done.stderr
    # the QA record would lack the operator; the level is the logged session's
    assert "warning: no --operator given" in done.stderr, done.stderr
    first = json.loads(monitor_cli("audit", session, "--json").stdout)["levels"][0]
    second = json.loads(monitor_cli("audit", tmp_path / "again", "--json").stdout)["levels"][0]
    assert second["level"] == first["level"] is not None
    key = [(a["kind"], a["priority"], a["frame"]) for a in first["alarms"]]
    assert [(a["kind"], a["priority"], a["frame"]) for a in second["alarms"]] == key
    assert second["frames"] == first["frames"]


def _private_endpoints() -> list[str]:
    return Endpoints.private().args()


def test_bad_audit_and_export_inputs_get_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (
        ("audit", tmp_path / "missing"),
        ("audit", tmp_path / "empty"),
        ("export", tmp_path / "empty", tmp_path / "out"),
        ("audit", tmp_path / "empty", "--summary"),
        ("replay", "--headless"),
    ):
        done = monitor_cli(*args)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "error:" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("how", "said"),
    [("edit", "rewritten"), ("in place", "does not match its hash"), ("unsigned", "no signed head")],
)
def test_the_summary_lists_a_rewritten_log_first_as_untrusted(session, tmp_path, how, said):
    """Rewritten with the chain recomputed (the signed head catches it) or edited in place
    (the last record, and so the head, untouched: the summary checked only the head and
    counted it complete; now it verifies the chain too)."""
    root = tmp_path / "sessions"
    shutil.copytree(session, root / "real")
    forged = _forge(session, tmp_path, "forged", how)
    shutil.move(forged, root / "forged")
    done = monitor_cli("audit", root, "--summary", "--json")
    assert done.returncode == 3, done.stderr
    table = json.loads(done.stdout)
    (bad,) = table["untrusted"]
    assert bad["folder"] == str(root / "forged") and said in bad["problems"][0], bad
    (row,) = table["rows"]
    assert row["sessions"] == 2 and row["incomplete"] == 1  # the forged one is not counted complete
    text = monitor_cli("audit", root, "--summary").stdout.splitlines()
    assert text[0].startswith(f"UNTRUSTED: {root / 'forged'}: ")
    assert not any(line.startswith("INCOMPLETE") for line in text)  # said once, as untrusted
    narrowed = json.loads(monitor_cli("audit", root, "--summary", "--json", "--operator", "nobody").stdout)
    assert [u["folder"] for u in narrowed["untrusted"]] == [str(root / "forged")]  # no filter hides it


def test_planes_at_different_frame_rates_are_merged_by_time_not_frame_index(session, tmp_path):
    """The AP view at half the lateral's rate (every other frame, FrameTime doubled): rows
    were merged by frame index, so AP frame 20 (at 5.3 s) filled the row of lateral frame 20
    (at 2.7 s), the volume ran backwards in time and the mL injected after each alarm read
    1.9x too high. Merged by acquisition time, the reactions agree with the biplane run."""
    from monitor.io.dicom import WriteOptions, write_recording
    from monitor.io.sources import DicomPairSource

    rec = default_recording()
    with open_recording(rec.ap) as r:
        info = r.info
        frames = np.stack(list(r.frames()))[::2]
    ap = write_recording(
        tmp_path / "ap.dcm",
        frames,
        WriteOptions(
            "ap", info.geometry, 2000 / info.frame_rate, info.bits_stored, info.photometric,
            info.intensity_relationship,
        ),
    )  # fmt: skip
    source = DicomPairSource(rec.lateral, ap)
    spec = RunSpec(str(tmp_path / "s"), "L1", endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 0
    source.close()
    done = monitor_cli("audit", tmp_path / "s", "--json")
    assert done.returncode == 0, done.stderr
    half = json.loads(done.stdout)["levels"][0]
    both = json.loads(monitor_cli("audit", session, "--json").stdout)["levels"][0]
    times = [f["time_s"] for f in half["frames"]]
    assert len(times) == 48 and times == sorted(times)
    volumes = [f["volume_ml"] for f in half["frames"] if f["volume_ml"] is not None]
    assert all(later >= earlier - 0.2 for earlier, later in zip(volumes, volumes[1:], strict=False))
    assert [(a["kind"], a["frame"]) for a in half["alarms"]] == [
        (a["kind"], a["frame"]) for a in both["alarms"]
    ]
    for a, b in zip(half["alarms"], both["alarms"], strict=True):
        if b["injected_after_ml"] is not None:
            assert a["injected_after_ml"] == pytest.approx(b["injected_after_ml"], rel=0.15), (a, b)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """18 synthetic session logs, one every 6 hours from 2026-11-01 00:00 UTC, in three rooms;
    seed 16 without an operator; seeds 0, 5, 10 and 15 with a leak alarm, 3, 8 and 13 with a
    possible leak (medium) alone."""
    from monitor.bench_log import write_fake_session

    root = tmp_path_factory.mktemp("archive")
    for seed in range(18):
        write_fake_session((root / f"s{seed:02d}", seed))
    return root


def test_the_summary_filters_by_day_room_operator_and_level_and_lists_the_leaks(archive):
    import datetime

    from monitor.bench_log import FAKE_START

    everything = json.loads(monitor_cli("audit", archive, "--summary", "--json").stdout)
    assert everything["sessions"] == 18 and everything["filter"] == ""
    leaking, possible = {0, 5, 10, 15}, {3, 8, 13}
    listed = {leak["folder"]: leak for leak in everything["leaked"]}
    assert set(listed) == {str(archive / f"s{i:02d}") for i in leaking | possible}
    # a possible leak is listed for QA beside the high ones, and counted apart from them
    for i in possible:
        assert (
            listed[str(archive / f"s{i:02d}")]["leaks"],
            listed[str(archive / f"s{i:02d}")]["possible_leaks"],
        ) == (0, 1)
    assert (
        sum(r["possible_leaks"] for r in everything["rows"])
        == sum(leak["possible_leaks"] for leak in everything["leaked"])
        >= len(possible)
    )
    text = monitor_cli("audit", archive, "--summary").stdout
    assert re.search(
        re.escape(f"LEAK: {archive / 's03'} level ")
        + r"\S+ \(.*\): 0 leak alarm\(s\), 1 possible \(medium\)",
        text,
    ), text
    assert any(r["operator"] == "not recorded" for r in everything["rows"])  # seed 16, said so, not "?"
    day = {seed: datetime.date.fromtimestamp(FAKE_START + seed * 6 * 3600.0) for seed in range(18)}
    first, last = day[4], day[12]
    done = monitor_cli(
        "audit", archive, "--summary", "--json", "--from", first, "--to", last, "--room", "room 2"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    covered = {s for s in range(18) if first <= day[s] <= last and s % 3 + 1 == 2}
    assert table["sessions"] == len(covered) > 0
    named = {str(archive / f"s{s:02d}") for s in covered & (leaking | possible)}
    assert {leak["folder"] for leak in table["leaked"]} == named
    assert table["filter"] == f"begun from {first}, begun until {last}, in room 'room 2'"
    summary = ("audit", archive, "--summary", "--json")
    by_operator = json.loads(monitor_cli(*summary, "--operator", "Dr Adams").stdout)
    assert by_operator["rows"] and {r["operator"] for r in by_operator["rows"]} == {"Dr Adams"}
    by_level = json.loads(monitor_cli(*summary, "--level", "L1").stdout)
    assert by_level["rows"] and {r["level"] for r in by_level["rows"]} == {"L1"}
    assert by_level["sessions"] == sum(r["sessions"] for r in by_level["rows"])  # those with an L1
    for row, histogram in zip(by_level["rows"], by_level["volume_histograms"], strict=True):
        assert sum(histogram["counts"]) == row["sessions"]  # every synthetic level has a volume
    for args, said in (
        ((archive / "s00", "--level", "L1"), "--level: only with --summary"),
        ((archive, "--summary", "--from", last, "--to", first), "is after --to"),
    ):
        refused = monitor_cli("audit", *args)
        assert refused.returncode == 1 and said in refused.stderr and refused.stderr.count("\n") == 1


def test_the_summary_page_lists_what_to_look_at_and_links_each_leak_to_its_report(archive, tmp_path):
    """One self-contained page, rendered in headless Chromium: the leaks link to reports
    written beside it, and the browser draws the tables and the volume histograms."""
    import subprocess

    page = tmp_path / "qa" / "summary.html"
    done = monitor_cli("audit", archive, "--summary", "--html", page)
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert "<script" not in text and "http" not in text  # nothing fetched from anywhere
    links = re.findall(r"<a href='([^']+)'>([^<]+)</a>", text)
    # one row per level with a leak alarm, high or possible (s13 has two levels with a possible one)
    assert sorted({folder for _, folder in links}) == [
        str(archive / f"s{i:02d}") for i in (0, 3, 5, 8, 10, 13, 15)
    ]
    for link, folder in links:
        report = (page.parent / link).read_text()
        assert "Vertebroplasty session audit" in report and "extravasation" in report, folder
        if folder.endswith(("s03", "s08", "s13")):  # its level says the possible leak, not "0 leaks"
            assert re.search(r"<th>leak alarms</th><td class='num'>0 high, 1 possible \(medium\)", report)
    rows = text.count("<tr>") - 2 - len(links)  # less the two headers and the leak rows
    assert text.count("<svg") == rows > 0  # a volume histogram per operator and level
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium (scripts/setup installs it as root)")
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'c'}"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert "Vertebroplasty QA summary" in dom.stdout and dom.stdout.count("<rect") > 0
    shot = tmp_path / "summary.png"
    subprocess.run([*flags, "--window-size=1300,1600", f"--screenshot={shot}", page.as_uri()], timeout=120)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (1600, 1300)
    assert (image < 128).any(axis=2).mean() > 0.01  # text and tables drawn, not a blank page


def test_the_sr_holds_every_figure_of_the_audit_and_references_the_images(session, tmp_path):
    """`monitor export --sr`: a TID 1500 report that pydicom and highdicom both open, whose
    volume, closest distance and alarms (time, distance, reaction, kind, site, priority) are
    the audit's, naming the algorithm and the exported images by UID."""
    import highdicom as hd

    from monitor.io.sr import VALUES, read_sr

    done = monitor_cli("export", session, tmp_path / "out", "--sr")
    assert done.returncode == 0, done.stderr
    level = json.loads(monitor_cli("audit", session, "--json").stdout)["levels"][0]
    figures = read_sr(tmp_path / "out" / "report.dcm")
    assert set(figures) == {"level L1"} | {f"level L1 alarm {i}" for i in range(1, len(level["alarms"]) + 1)}
    measured = figures["level L1"]
    assert measured["Volume"] == (pytest.approx(level["volume_ml"], abs=1e-4), "ml")
    low, high = (measured[f"Cement volume, {b} bound of its 68 % interval"] for b in ("lower", "upper"))
    assert (low, high) == (
        (pytest.approx(level["volume_low_ml"], abs=1e-4), "ml"),
        (pytest.approx(level["volume_high_ml"], abs=1e-4), "ml"),
    )
    assert low[0] < level["volume_ml"] < high[0]
    closest = measured["Closest distance of cement front to posterior wall"]
    assert closest == (pytest.approx(level["min_distance_mm"], abs=1e-4), "mm")
    assert (measured["algorithm"], measured["algorithm version"]) == ("vertebroplasty-monitor", "0.1.0")
    assert measured["Finding Site"] == "L1 vertebra"  # the level, coded (SCT)
    assert any(a["kind"] == "extravasation" for a in level["alarms"])  # the case leaks
    for i, alarm in enumerate(level["alarms"], 1):
        said = figures[f"level L1 alarm {i}"]
        when = said["Time of alarm from start of monitoring"]
        assert when == (pytest.approx(alarm["time_s"] - level["start_s"], abs=1e-4), "s")
        at = said["Distance of cement front to posterior wall at alarm"]
        assert at == (pytest.approx(alarm["distance_mm"], abs=1e-4), "mm")
        stopped = said.get("Time from alarm to stop of injection")
        assert (stopped and stopped[0]) == (
            alarm["stopped_after_s"] and pytest.approx(alarm["stopped_after_s"])
        )
        assert said["Cement volume injected after alarm"][0] == pytest.approx(alarm["injected_after_ml"])
        assert said["Alarm kind"] == VALUES[alarm["kind"]].meaning
        assert said["Alarm priority"] == VALUES[alarm["priority"]].meaning
        assert said.get("Alarm site") == (VALUES[alarm["site"]].meaning if alarm["site"] else None)
        assert said["Injection stopped after alarm"] == ("No" if alarm["stopped_after_s"] is None else "Yes")
    report = hd.sr.srread(tmp_path / "out" / "report.dcm")
    assert isinstance(report, hd.sr.Comprehensive3DSR)
    groups = report.content.get_image_measurement_groups()
    assert {g.tracking_identifier for g in groups} == set(figures)
    images = [
        pydicom.dcmread(tmp_path / "out" / f"{p}.dcm", stop_before_pixels=True) for p in ("lateral", "ap")
    ]
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    cited = {sop.ReferencedSOPInstanceUID for series in evidence for sop in series.ReferencedSOPSequence}
    assert cited == {ds.SOPInstanceUID for ds in images}
    assert report.StudyInstanceUID == images[0].StudyInstanceUID and report.PatientID == PATIENT
    dataset = pydicom.dcmread(tmp_path / "out" / "report.dcm")
    cited = []  # each alarm group cites the frame of its plane's image it was raised on
    for group in dataset.ContentSequence[-1].ContentSequence:  # Imaging Measurements
        items = group.get("ContentSequence", [])
        name = next((i.TextValue for i in items if i.ValueType == "TEXT"), "")
        if name.startswith("level L1 alarm"):
            refs = [i.ReferencedSOPSequence[0] for i in items if i.ValueType == "IMAGE"]
            cited.append([(r.ReferencedSOPInstanceUID, r.ReferencedFrameNumber) for r in refs])
    assert cited == [[(images[0].SOPInstanceUID, a["frame"] + 1)] for a in level["alarms"]]
    again = monitor_cli("export", session, tmp_path / "out", "--sr", "--deidentify")
    assert again.returncode == 1 and "already holds an export" in again.stderr  # never a mix of two


def test_the_deidentified_sr_says_nothing_of_the_patient_operator_or_day(session, tmp_path):
    from monitor.io.sr import read_sr

    done = monitor_cli("export", session, tmp_path / "anon", "--deidentify", "--sr")
    assert done.returncode == 0, done.stderr
    sr = pydicom.dcmread(tmp_path / "anon" / "report.dcm")
    values = [str(e.value) for e in sr.iterall() if e.VR != "SQ"]
    assert not any(PATIENT in v or OPERATOR in v or ROOM in v for v in values)
    assert not [
        e.keyword
        for e in sr.iterall()
        if e.VR in ("DA", "DT", "TM")
        and e.value
        and e.keyword != "ContentTime"
        and e.keyword != "ContentDate"
    ]
    assert sr.PatientIdentityRemoved == "YES" and sr.ContentDate == "19000101"
    lateral = pydicom.dcmread(tmp_path / "anon" / "lateral.dcm", stop_before_pixels=True)
    assert sr.StudyInstanceUID == lateral.StudyInstanceUID  # still the images' study, de-identified
    assert read_sr(tmp_path / "anon" / "report.dcm")["level L1"]["Volume"][1] == "ml"
    monitor_cli("export", session, tmp_path / "plain", "--sr")
    plain = {name: g["uid"] for name, g in read_sr(tmp_path / "plain" / "report.dcm").items()}
    anon = {name: g["uid"] for name, g in read_sr(tmp_path / "anon" / "report.dcm").items()}
    assert plain.keys() == anon.keys() and not set(plain.values()) & set(anon.values())  # unlinkable


def test_a_digest_written_at_close_stands_for_the_log_only_while_the_log_is_unchanged(tmp_path):
    """The summary takes a closed log's signed digest instead of reading it, and gives the same
    figures; once the log is written to, or its digest forged without the key, it reads the log."""
    from monitor.audit import find_sessions, summarize
    from monitor.bench_log import write_fake_session
    from monitor.io.signing import DIGEST_NAME

    for seed in range(3):
        write_fake_session((tmp_path / f"s{seed}", seed))
    folders = find_sessions(tmp_path)
    taken = summarize(folders)
    read = summarize(folders, close_digests=False)
    assert (taken["from_close"], taken["read"]) == (3, 0) and read["read"] == 3
    assert taken["rows"] == read["rows"] and taken["leaked"] == read["leaked"]
    store = SessionStore.create(tmp_path / "s1")  # a record appended after the close
    store.add_event("operator", "note", "written after the close")
    store.close()
    forged = json.loads((tmp_path / "s2" / DIGEST_NAME).read_text())
    forged["digest"]["operator"] = "someone else"  # without the key, its signature no longer holds
    (tmp_path / "s2" / DIGEST_NAME).write_text(json.dumps(forged))
    again = summarize(folders)
    assert (again["from_close"], again["read"]) == (1, 2)
    assert [u["folder"] for u in again["untrusted"]] == [str(tmp_path / "s1")]  # appended after signing
    assert "someone else" not in {r["operator"] for r in again["rows"]}


def test_the_archive_walk_finds_sessions_at_any_depth_in_order(tmp_path):
    """The summary's and the re-analysis's walk, 32 folders at a time: sessions at any depth,
    sorted, folders without a log skipped, symbolic links not followed (no loops, no doubles)."""
    from monitor.audit import IO_THREADS, find_sessions

    made = []
    for i in range(3 * IO_THREADS):  # enough folders for the threads to share
        folder = tmp_path / f"2026-{i % 3}" / f"s{i:03d}"
        folder.mkdir(parents=True)
        (folder / DB_NAME).touch()
        made.append(folder)
    deep = tmp_path / "2025" / "old" / "archive" / "s"
    deep.mkdir(parents=True)
    (deep / DB_NAME).touch()
    (tmp_path / "notes").mkdir()
    (tmp_path / "2026-0" / "loop").symlink_to(tmp_path)
    assert find_sessions(tmp_path) == sorted([*made, deep])
    with pytest.raises(Exception, match="not a directory"):
        find_sessions(tmp_path / "missing")


def test_a_folder_the_walk_cannot_list_is_said_not_skipped(tmp_path, monkeypatch):
    """A folder that cannot be listed (no permission; as root, which the tests may run as,
    os.scandir is made to refuse it) is named with why, and the sessions beside it found."""
    import os

    from monitor.audit import find_sessions

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / DB_NAME).touch()
    (tmp_path / "locked").mkdir()
    real = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    unlisted = []
    assert find_sessions(tmp_path, unlisted) == [tmp_path / "a", tmp_path / "b"]
    assert len(unlisted) == 1 and unlisted[0]["folder"] == str(tmp_path / "locked")
    assert "Permission denied" in unlisted[0]["error"] and "left out" in unlisted[0]["error"]


def test_a_volume_from_one_views_shape_says_so_in_the_audit():
    """A level whose volume was the cement's shape in one view alone (the other clipped past
    reading: volume-one-view beside volume-below-shape) is said as such, per instant and in the
    text; the two views' shape and the darkness as before, and a darkness weighed with the shape
    (the result's volume_darkness_weight under 1) as between the two."""
    from monitor.audit import _volume_from, volume_phrase

    below, one = {"code": "volume-below-shape"}, {"code": "volume-one-view"}
    assert _volume_from({"caveats": [below, one]}) == "shape-one-view"
    assert _volume_from({"caveats": [below]}) == "shape"
    assert _volume_from({"caveats": [one]}) == "darkness"  # checked by one view, kept
    # weighed with the shape's truth (since session 60), and a log from before that says nothing
    assert _volume_from({"caveats": [], "volume_darkness_weight": 0.4}) == "darkness-and-shape"
    assert _volume_from({"caveats": [], "volume_darkness_weight": 1.0}) == "darkness"
    # a weight of 0 is the shape's: a volume held from one (volume-held, not its own caveat)
    assert _volume_from({"caveats": [{"code": "volume-held"}], "volume_darkness_weight": 0.0}) == "shape"
    assert _volume_from({"caveats": []}) == "darkness"
    for source, (ml, low, high), said in (
        (
            "darkness-and-shape",
            (2.1, 1.9, 2.6),
            "2.10 mL (1.90-2.60) between the image's darkness and the cement's shape (the darkness"
            " read a little under or over it)",
        ),
        (
            "shape-one-view",
            (2.85, 2.41, 3.65),
            "2.85 mL (2.41-3.65) from the cement's shape in one view alone (the other gave no"
            " outline; the image's darkness did not agree with it)",
        ),
    ):
        level = {"volume_ml": ml, "volume_low_ml": low, "volume_high_ml": high, "volume_from": source}
        assert volume_phrase(level) == said


class _TwoPasses:
    """The bundled recording sent twice in one run, as ``monitor replay --loop`` sends it: each
    plane's frame indexes repeat on the second pass while the stream's time runs on."""

    def __init__(self, source):
        self.source, self.formats, self.fps = source, source.formats, source.fps

    def frames(self):
        from dataclasses import replace

        first = list(self.source.frames())
        yield from first
        offset = max(item.acq_time for item in first) + 1.0 / (self.fps or 10.0)
        for item in first:
            yield replace(item, acq_time=item.acq_time + offset)

    def close(self):
        self.source.close()


@pytest.fixture(scope="module")
def looped(tmp_path_factory):
    """The bundled case sent twice in one run (:class:`_TwoPasses`), logged, with its faulty
    frames (:class:`_Faulty`) on both passes."""
    rec = default_recording()
    folder = tmp_path_factory.mktemp("looped") / "session"
    source = _TwoPasses(_Faulty(rec.lateral, rec.ap))
    spec = RunSpec(str(folder), "L1", meta={"patient": PATIENT}, endpoints=Endpoints.private())
    assert run(source, spec, PaceOptions(speed=0), say=lambda m: None) == 0
    source.close()
    return folder


def test_the_caveat_rows_start_again_where_frame_indexes_repeat(looped):
    """A looped replay (or a source restarted in a session) sends each frame index again: each
    pass's skipped frames are a row of their own, at that pass's stream time, not one row whose
    frames run from the first pass's index to the second's (20-20 for two frames 9 s apart, as
    until 2026-12-06)."""
    (level,) = json.loads(monitor_cli("audit", looped, "--json").stdout)["levels"]
    # (the second pass's cement starts again from none: its frames also say the volume is held)
    skipped = [c for c in level["caveats"] if c["status"].startswith("skipped")]
    rows = [(c["plane"], c["first_frame"], c["last_frame"], c["frames"]) for c in skipped]
    assert rows == [("lateral", 20, 20, 1), ("ap", 30, 31, 2)] * 2
    starts = [c["first_s"] for c in skipped]
    assert starts == sorted(starts) and starts[2] > skipped[1]["last_s"]
    passes = sorted(r["time_s"] for r in level["frames"] if r["frame"] == 20)
    assert [c["first_s"] for c in skipped if c["plane"] == "lateral"] == passes and len(passes) == 2
    text = monitor_cli("audit", looped).stdout
    for at in passes:
        assert f"NOTE  frame 20 ({at:.2f} s) lateral (1): skipped: blank frame" in text


def test_caveat_rows_follow_the_order_frames_were_sent_not_written():
    """The runs of frame indexes a caveat row is one of are read in the order the source sent
    the frames (seq), per stream: a result written late (after the loop had begun again) stays
    in its own pass's row, and a second stream (a source restarted, its time from 0 again) has
    rows of its own, after the first's; so have its per-instant rows, and its alarms' reactions
    are read from its own volumes (an alarm record naming no stream is the stream of the result
    written before it). (Until a review of 2026-12-06 a late result joined the pass being
    written, "frames 0-9" with its time running backwards; a second stream's frame 20 joined the
    first's row, its instants the first's rows, and its alarms read the first's volumes.)"""
    from dataclasses import replace

    from monitor.audit import _level_report
    from monitor.io.store import Record

    def result(stream, seq, frame, t, skipped, volume):
        status = "skipped: blank frame (no contrast)" if skipped else "ok"
        body = {"stream": stream, "acq_time": t, "status": status, "caveats": [], "distance_mm": None}
        return Record(0, "result", t, "lateral", seq, frame, "L1", {**body, "volume_ml": volume})

    blank = {8, 9}  # skipped on both passes
    # stream a: the volume stops rising at 0.5 s; stream b (restarted, from 0 s): it never stops
    first = [result("a", f, f, f / 10, f in blank, min(f / 10, 0.5)) for f in range(10)]
    second = [result("a", 10 + f, f, 1 + f / 10, f in blank, 0.5) for f in range(10)]
    late = first.pop(9)  # pass 1's frame 9, written after pass 2's frame 0
    restarted = [result("b", f, f, f / 10, f in blank, f / 10) for f in range(10)]
    written = [*first, second[0], late, *second[1:], *restarted]
    written = [replace(r, rec=2 * i) for i, r in enumerate(written)]  # as written, alarms between

    def alarm(rec, stream, t):
        body = {"id": f"x{rec}", "state": "raised", "acq_time": t, "kind": "proximity", "priority": "high"}
        raised = Record(rec, "alarm", t, "lateral", 1, 1, "L1", {**body, "stream": stream, "frame": 1})
        return {"raised": raised, "acknowledged": None, "cleared": None}

    # during stream b: one naming it, at its frame 1; two naming none, written (as the analyzer
    # writes a frame's alarms) just before its result: stream b's first frame (after stream a's
    # last result) and its frame 1
    alarms = {"b": alarm(43, "b", 0.1), "first": alarm(39, None, 0.0), "none": alarm(41, None, 0.1)}
    lv = {"level": "L1", "results": written, "alarms": alarms, "events": []}
    level = _level_report(lv)
    rows = [
        (c["first_frame"], c["last_frame"], c["first_s"], c["last_s"], c["frames"]) for c in level["caveats"]
    ]
    assert rows == [(8, 9, 0.8, 0.9, 2), (8, 9, 1.8, 1.9, 2), (8, 9, 0.8, 0.9, 2)]
    times = [row["time_s"] for row in level["frames"]]
    assert len(times) == 30 and times[20:] == [f / 10 for f in range(10)]
    assert (level["start_s"], level["end_s"]) == (0.0, 1.9)
    # stream b's volume never stops rising: read from stream a's, it did at 0.5 s
    assert [(a["time_s"], a["stopped_after_s"], a["total_after_ml"]) for a in level["alarms"]] == [
        (0.0, None, 0.9),
        (0.1, None, 0.8),
        (0.1, None, 0.8),
    ]


def test_the_summary_reads_each_alarms_reaction_from_its_own_stream(tmp_path):
    """A source restarted in a session starts its time again. The summary over sessions read an
    alarm's reaction from every result written after it, in both streams; an alarm naming no
    stream at the second stream's start was taken for the first's. Now each alarm reads its own
    stream's, one naming none the stream of the result written next (its frame's: the analyzer
    writes a frame's alarms first) (found by reviews, 2026-12-06). A real session log, written
    as the logger writes one."""
    from monitor.analyzer import result_for
    from monitor.audit import session_digest
    from monitor.messages import FrameHeader

    store = SessionStore.create(tmp_path / "s", {"level": "L1"})
    alarm = {"kind": "proximity", "priority": "high", "plane": "lateral"}
    for stream, volume in (("a", lambda t: t), ("b", lambda t: min(t, 0.5))):
        for i in range(20):
            t = round(i / 10, 3)
            h = FrameHeader(stream, "lateral", i, i, t, 0.0, (8, 8), "uint16", "MONOCHROME2", 12)
            if stream == "b" and i == 0:  # naming no stream, written before its frame's result
                store.add_alarm("raised", {**alarm, "id": "b0", "frame": 0}, "L1", t)
            store.add_result(result_for(h, volume_ml=volume(t)), "L1")
            if stream == "a" and i == 1:
                store.add_alarm("raised", {**alarm, "id": "a1", "frame": 1}, "L1", t, (stream, 1))
    store.close()
    (level,) = session_digest(tmp_path / "s")["levels"]
    # stream a's injection never stopped; stream b's stopped 0.5 s after its alarm at its start
    assert level["reactions"] == [0.5], level


def test_the_sr_cites_the_frame_an_alarm_was_raised_on_when_frame_indexes_repeat(looped, tmp_path):
    """A looped replay (or a source restarted in a session) sends each frame index again. The
    audit names the frame each alarm was raised on by its run and sequence number, and the SR
    cites that frame of the exported image, not the other pass's frame with the same index
    (which it cited until 2026-12-06)."""
    from monitor.io.sr import ExportedFrames

    folder = looped
    done = monitor_cli("export", folder, tmp_path / "out", "--sr")
    assert done.returncode == 0, done.stderr
    (level,) = json.loads(monitor_cli("audit", folder, "--json").stdout)["levels"]
    store = SessionStore.open(folder)
    try:
        sent = {
            p: [(r.body["stream"], r.seq, r.frame) for r in store.frames_as_sent() if r.plane == p]
            for p in ("lateral", "ap")
        }
    finally:
        store.close()
    passes = len(sent["lateral"]) // 2
    assert passes > 0 and [f[2] for f in sent["lateral"][passes:]] == [f[2] for f in sent["lateral"][:passes]]
    assert level["alarms"] and all(a["stream"] is not None and a["seq"] is not None for a in level["alarms"])
    dataset = pydicom.dcmread(tmp_path / "out" / "report.dcm")
    cited = {}
    for group in dataset.ContentSequence[-1].ContentSequence:  # Imaging Measurements
        items = group.get("ContentSequence", [])
        name = next((i.TextValue for i in items if i.ValueType == "TEXT"), "")
        if name.startswith("level L1 alarm"):
            (ref,) = [i.ReferencedSOPSequence[0] for i in items if i.ValueType == "IMAGE"]
            cited[int(name.rsplit(" ", 1)[1])] = ref.get("ReferencedFrameNumber")
    first_pass = []
    for i, alarm in enumerate(level["alarms"], 1):
        mine = sent[alarm["plane"]]
        where = mine.index((alarm["stream"], alarm["seq"], alarm["frame"]))  # the frame it was raised on
        assert cited[i] == where + 1
        if where < len(mine) // 2:
            first_pass.append(alarm)
            assert mine[where + len(mine) // 2][2] == alarm["frame"]  # its index, sent again
    assert first_pass, "the first pass raised alarms, whose frame indexes the second pass sent again"
    # by its index alone, a repeated index names no frame (never the other pass's)
    exported = ExportedFrames.of(sent[first_pass[0]["plane"]])
    assert exported.number({"frame": first_pass[0]["frame"]}) is None
    # ... while an older log's alarm (no stream, no seq) is still cited by an index sent once
    older = ExportedFrames.of([("run-1", 0, 5), ("run-1", 1, 6), ("run-2", 0, 5)])
    assert (older.number({"frame": 6}), older.number({"frame": 5})) == (2, None)
    assert (
        exported.number(first_pass[0])
        == sent[first_pass[0]["plane"]].index(
            (first_pass[0]["stream"], first_pass[0]["seq"], first_pass[0]["frame"])
        )
        + 1
    )


def test_the_html_key_frames_show_the_frame_each_alarm_was_raised_on_when_indexes_repeat(looped, tmp_path):
    """The HTML audit's key frames of a session whose frame indexes repeat (a looped replay):
    each alarm's picture is the frame it was raised on, the first pass's, with the alarm's
    banner, not the second pass's frame of the same index (which it showed until 2026-12-06)."""
    from monitor.render import render_frames, render_sent

    out = tmp_path / "audit.html"
    done = monitor_cli("audit", looped, "--html", out)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    (level,) = json.loads(monitor_cli("audit", looped, "--json").stdout)["levels"]
    figures = re.findall(r"<img src='data:image/png;base64,([^']+)' alt='[^']*'><figcaption>([^<]+)<", page)
    pictures = {caption: data for data, caption in figures}
    assert level["alarms"]
    store = SessionStore.open(looped)
    try:
        for alarm in level["alarms"]:
            said = f"frame {alarm['frame']} at {alarm['time_s']:.2f} s: {alarm['priority']} {alarm['kind']}"
            data = pictures[f"{said} alarm raised"]
            image = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
            # drawn after the first key frame, which sets each view's display window for the page
            first = level["alarms"][0]
            keys = [(a["stream"], a["plane"], a["seq"]) for a in (first, alarm)]
            *_, (_, raised_on) = render_sent(store, keys, size=420)
            assert np.array_equal(image, raised_on)
            *_, (_, last_copy) = render_frames(store, [first["frame"], alarm["frame"]], None, size=420)
            assert not np.array_equal(image, last_copy)  # the index's last copy: the second pass's
    finally:
        store.close()


def test_a_biplane_pair_at_different_frame_rates_is_one_instant():
    """Each plane's acquisition times come from its own frame time, written to 4 decimals: at
    7.5 and 3.75 frames/s the lateral frame 22 and the AP frame 11, acquired together, are
    2.9333326 and 2.9333337 s (an independent review). A key frame draws them side by side as
    one instant (the audit merges its rows to 0.1 ms so too); frames a millisecond apart are not."""
    from monitor.io.store import Record
    from monitor.render import _instant

    def at(plane, t):
        return Record(1, "frame", 0.0, plane, 0, 0, None, {"acq_time": t})

    assert _instant(at("lateral", 22 * 0.1333333)) == _instant(at("ap", 11 * 0.2666667))
    assert _instant(at("lateral", 2.9333)) != _instant(at("ap", 2.9343))


def test_the_reaction_to_an_alarm_is_said_when_no_volume_or_no_time_followed_it():
    """The text audit died of a TypeError on an alarm with no volume read after it (a session
    logged at --fps 1e9, an independent test), and said "did not stop" of an alarm the recording
    ended 0.13 s after, with no cement injected after it. A stop found only after frames not
    read came somewhere in them: said "stopped within", with how long was not seen (it was
    said "stopped 2.2 s later" where 2 s of that went unread: session 77's review)."""
    from monitor.audit import _reaction_phrase, reaction

    assert _reaction_phrase(reaction([], 1.0)) == "; no volume read after it"
    ended = reaction([(1.0, 2.0), (1.13, 2.0)], 1.0)  # flat, but ended within HOLD_S (0.4 s)
    assert ended["stopped_after_s"] is None
    assert (
        _reaction_phrase(ended) == "; no cement went in after it before the recording ended (0.00 mL after)"
    )
    going = reaction([(1.0, 2.0), (1.13, 2.4)], 1.0)
    assert _reaction_phrase(going) == "; injection did not stop (0.40 mL after)"
    stopped = reaction([(1.0, 2.0), (1.2, 2.3), (1.4, 2.3), (1.6, 2.3), (1.8, 2.3)], 1.0)
    assert _reaction_phrase(stopped) == "; stopped 0.2 s later, 0.30 mL after"
    # pulses 0.5 s apart (2 a second), each over HOLD_S apart: read all through, the stop found
    slow = reaction([(1.0, 2.0), (1.5, 2.3), (2.0, 2.3), (2.5, 2.3), (3.0, 2.3)], 1.0)
    assert _reaction_phrase(slow) == "; stopped 0.5 s later, 0.30 mL after"
    # frames not read for 2 s after the alarm (blank, held): no flat volume, so no stop at once
    # ... and when the stop is found after them, it came somewhere in them: said as its latest time
    unread = reaction([(1.0, 2.0), (3.0, 2.9), (3.2, 3.2), (3.4, 3.2), (3.6, 3.2), (3.8, 3.2)], 1.0)
    assert _reaction_phrase(unread) == "; stopped within 2.2 s, not seen for 2.0 s of it, 1.20 mL after"
    assert unread["stop_unseen_s"] == 2.0 and stopped["stop_unseen_s"] == slow["stop_unseen_s"] == 0.0
    from monitor.report import _alarm_table

    alarm = {
        "frame": 9,
        "time_s": 1.0,
        "kind": "proximity",
        "site": None,
        "priority": "high",
        "plane": "lateral",
    }
    alarm |= {"distance_mm": 4.8, "acknowledged_after_s": None}
    cells = _alarm_table({"alarms": [alarm | unread, alarm | stopped]})  # the HTML's
    assert "&le; 2.2<br><small>not seen for 2.0 s</small>" in cells and "&le; 0.2" not in cells
