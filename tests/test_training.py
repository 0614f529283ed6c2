"""``monitor train`` as a trainee meets it: one real replay of the bundled default case, a STOP
pressed on the window during it, the verdict read off the screen and the training log, and the
progress report over that log."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import pytest  # noqa: E402

from monitor.audit import audit_json  # noqa: E402
from monitor.cli import main  # noqa: E402
from monitor.errors import MonitorError  # noqa: E402
from monitor.io.store import SessionStore  # noqa: E402
from monitor.recordings import bundled_recordings, default_recording  # noqa: E402
from monitor.training import (  # noqa: E402
    append_training_log,
    case_level,
    key_frames,
    score_training,
    verdict_lines,
)
from monitor.viewer import MonitorWindow, QtCore, QtWidgets  # noqa: E402
from tests.conftest import assert_5mm_alarm_on_time, load_truth  # noqa: E402

FPS = 7.5  # the bundled recordings' frame rate
LATE_BY = 5  # the trainee presses this many frames after the truth's crossing of the 5 mm line
TRAINEE = "T. Rainee"


@pytest.fixture(scope="module")
def trained(qapp, tmp_path_factory):
    """``monitor train`` on the bundled default case, run as the command line runs it, with a
    trainee who presses STOP on the window LATE_BY frames after the cement crosses the 5 mm
    line (truth). What the window showed at the press and once the verdict was up is kept; the
    window is closed 0.3 s (20 polls) after the verdict appears."""
    case = default_recording().lateral.parent
    press_from = load_truth(case)["proximity_frame"] + LATE_BY
    out = tmp_path_factory.mktemp("training")
    seen: dict = {}
    deadline = time.monotonic() + 150

    def controls(w: MonitorWindow) -> dict:
        names = ("banner", "ack", "audio", "pause_button", "confirm_button", "wall_button", "body_button")
        names += ("syringe_button", "level_box", "distance_plot", "volume_plot")
        shown = {n: getattr(w, n).isVisible() for n in names}
        return shown | {f"readout {k}": r.isVisible() for k, r in w.readouts.items()}

    def after_the_verdict(w: MonitorWindow) -> None:
        seen["verdict_later"] = w.verdict_text.text()
        seen["banner_later"] = (w.banner.isVisible(), w.banner.text())
        seen["views_later"] = [v.isVisible() for v in w.views.values()]
        seen["status_later"] = w.status_line.isVisible()
        seen["pictures"] = [(c.text(), p.isVisible(), i.image) for c, p, i in w.key_views]
        path = out / "verdict.png"
        if os.environ.get("MONITOR_SCREENSHOTS"):
            path = Path(os.environ["MONITOR_SCREENSHOTS"]) / "training-verdict.png"
        w.grab().save(str(path))
        seen["png"] = path
        w.close()  # the last window: the replay's event loop ends (a quit() besides would end the next)

    def drawn(curve) -> int:
        points = curve.getData()[0]
        return 0 if points is None else len(points)

    def look(w: MonitorWindow) -> None:
        lateral = w.views["lateral"]
        result = w.state.planes["lateral"].result
        seen["wall_found"] = seen.get("wall_found", False) or bool(result and result.overlay.get("wall"))
        seen["wall_drawn"] = max(seen.get("wall_drawn", 0), drawn(lateral.wall), drawn(lateral.cement))
        if "press" not in seen and (lateral.shown_frame or 0) >= press_from:
            w.stop_button.click()
            seen["press"] = {
                "frame": lateral.shown_frame,
                "acq_time": w.state.planes["lateral"].acq_time,
                "button": w.stop_button.text(),
                "count": w.stop_count.text(),
                "controls": controls(w),
            }
        if w.verdict.isVisible() and "verdict" not in seen:
            seen["verdict"] = w.verdict_text.text()
            QtCore.QTimer.singleShot(300, lambda: after_the_verdict(w))

    def watch():
        windows = [w for w in QtWidgets.QApplication.topLevelWidgets() if isinstance(w, MonitorWindow)]
        for w in (w for w in windows if w.training and w.isVisible()):
            try:
                look(w)
                give_up = time.monotonic() > deadline  # a verdict that never comes fails the tests
            except Exception as e:  # ... as does a slip here: neither hangs them
                seen["error"], give_up = repr(e), True
            if give_up:
                w.close()

    timer = QtCore.QTimer()
    timer.timeout.connect(watch)
    timer.start(20)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        code = main(["train", str(case), "--out", str(out), "--trainee", TRAINEE, "--speed", "4"])
    timer.stop()
    assert "error" not in seen, seen["error"]
    (entry,) = [json.loads(line) for line in (out / "training-log.jsonl").read_text().splitlines()]
    return {"code": code, "stdout": said.getvalue(), "entry": entry, "out": out, "seen": seen, "case": case}


def test_a_stop_on_the_window_is_confirmed_at_once_and_scored_in_seconds(trained):
    assert trained["code"] == 0
    press = trained["seen"]["press"]
    assert press["button"] == f"STOP recorded at {press['acq_time']:.1f} s"
    assert press["count"] == "1 STOP press recorded"
    (result,) = trained["entry"]["results"]
    (stop,) = result["stops"]
    alarm = result["monitor_alarms"]["proximity"]
    truth = load_truth(trained["case"])
    assert_5mm_alarm_on_time(alarm["frame"], truth)
    assert 0 <= result["monitor_alarms"]["leak"]["frame"] - truth["leak"]["onset_frame"] <= 2
    # frames kept for programs, seconds and mL added
    assert stop["frame"] == press["frame"]
    assert stop["frames_after_proximity"] == press["frame"] - alarm["frame"] > 0
    assert stop["seconds_after_proximity"] == pytest.approx(stop["frames_after_proximity"] / FPS, abs=0.002)
    assert stop["time_s"] == pytest.approx(press["acq_time"], abs=0.002)
    assert stop["ml_past_5mm_line"] > 0
    assert stop["ml_past_5mm_line"] == pytest.approx(stop["volume_ml"] - alarm["volume_ml"], abs=0.002)
    late = f"stopped {stop['seconds_after_proximity']:.2f} s after the monitor's alarm for the 5 mm line"
    assert result["verdict"][0] == f"{late}: {stop['ml_past_5mm_line']:.2f} mL past the line"
    assert "frame" not in " ".join(result["verdict"])
    assert result["level"] == trained["entry"]["level"] == "L1"
    assert "SeriesDescription" in trained["entry"]["level_source"]
    assert trained["stdout"].startswith("level L1 (from DICOM SeriesDescription")
    assert "level ?" not in trained["stdout"] and f"  {late}" in trained["stdout"]
    store = SessionStore.open(Path(trained["entry"]["session"]))
    try:
        assert store.meta()["level"] == "L1"  # the analyzer and the log were told the case's level
    finally:
        store.close()


def test_training_shows_no_overlay_alarm_or_operator_control(trained):
    seen = trained["seen"]
    assert seen["press"]["controls"] == dict.fromkeys(seen["press"]["controls"], False)
    assert seen["wall_found"] and seen["wall_drawn"] == 0  # the analyzer found the wall: not drawn


def test_the_verdict_stays_with_the_monitors_frame_beside_the_trainees(trained):
    """What the issue found: the verdict was overwritten by the alarm banner within 15 ms. It
    stays, over no live view, and shows where the monitor alarmed beside where the trainee
    stopped, captioned in seconds and mL as the log says."""
    seen, entry = trained["seen"], trained["entry"]
    (result,) = entry["results"]
    assert seen["verdict"] == seen["verdict_later"] == "\n".join(verdict_lines(entry))
    assert seen["verdict"].startswith("Case over, level L1:\n\u2022 Stopped ")
    assert seen["banner_later"][0] is False and seen["views_later"] == [False, False]
    assert seen["status_later"] is False  # no RECORDING ENDED / NO SIGNAL beside it
    alarm, stop = result["monitor_alarms"]["proximity"], result["stops"][0]
    (monitor, m_shown, m_image), (trainee, t_shown, t_image) = seen["pictures"]
    assert monitor == f"Monitor alarmed (5 mm line): {alarm['time_s']:.2f} s, {alarm['volume_ml']:.2f} mL"
    assert trainee == (
        f"You stopped: {stop['time_s']:.2f} s, {stop['volume_ml']:.2f} mL: "
        f"{stop['seconds_after_proximity']:.2f} s and {stop['ml_past_5mm_line']:.2f} mL late"
    )
    assert m_shown and t_shown and m_image.shape == t_image.shape == (512, 512, 3)
    cement = [np.count_nonzero(np.all(im == (40, 200, 230), axis=2)) for im in (m_image, t_image)]
    assert 0 < cement[0] < cement[1]  # the monitor's cyan contour, larger when the trainee stopped
    assert seen["png"].stat().st_size > 50_000


def test_never_pressed_and_never_alarmed_are_said_beside_the_monitors_frame(trained):
    """The same logged case scored as if nobody had pressed, and (its alarms taken away) as a
    case the monitor found nothing on."""
    store = SessionStore.open(Path(trained["entry"]["session"]))
    try:
        (level,) = audit_json(store, verify_images=False)["levels"]
    finally:
        store.close()
    never = score_training([], level)
    monitor, trainee = key_frames(never)
    end = never["end"]
    assert never["verdict"][0].startswith("never stopped: the monitor alarmed for the 5 mm line at 1.")
    assert monitor.frame == never["monitor_alarms"]["proximity"]["frame"] and monitor.tone == "alarm"
    assert trainee.frame == end["frame"] and trainee.tone == "bad"
    assert trainee.caption.startswith(
        f"You never pressed STOP: the injection ran on to {end['time_s']:.2f} s"
    )
    quiet = score_training([], level | {"alarms": []})
    monitor, trainee = key_frames(quiet)
    assert quiet["verdict"] == ["the monitor raised no high-priority alarm on this case"]
    assert monitor.caption.startswith("Monitor: no high-priority alarm (closest ")
    assert trainee.frame is None and trainee.caption.startswith("You did not press STOP")


def test_the_report_follows_a_trainee_over_the_training_log(trained, capsys):
    """The real entry, then the same case scored with an early stop and with none: counts, per
    case the first stop against the alarm in seconds and mL, and the trend."""
    out, entry = trained["out"], trained["entry"]
    store = SessionStore.open(Path(entry["session"]))
    try:
        (level,) = audit_json(store, verify_images=False)["levels"]
    finally:
        store.close()
    alarm_frame = entry["results"][0]["monitor_alarms"]["proximity"]["frame"]
    for stops in ([alarm_frame - 3], []):
        later = entry | {
            "time": entry["time"] + 60 * (1 + len(stops)),
            "results": [score_training(stops, level)],
        }
        append_training_log(out / "training-log.jsonl", later)
    assert main(["train", "--report", TRAINEE, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["outcome"] for r in report["sessions"]] == ["late", "never", "early"]
    assert report["counts"] == {"early": 1, "late": 1, "never": 1, "no alarm": 0}
    late, never, early = report["sessions"]
    assert late["seconds_after_alarm"] == entry["results"][0]["stops"][0]["seconds_after_proximity"]
    assert early["seconds_after_alarm"] == pytest.approx(-3 / FPS, abs=0.002)
    assert never["ml_past_5mm_line"] > late["ml_past_5mm_line"] > 0
    assert report["trend"]["first"] == {"sessions": 1, "median_lateness_s": late["lateness_s"], "never": 0}
    assert report["trend"]["last"]["median_lateness_s"] == early["seconds_after_alarm"]
    assert main(["train", "--report", TRAINEE, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{late['seconds_after_alarm']:.2f} s late (5 mm line at " in text
    assert "stopped early 1, late 1, never 1" in text and "sooner" in text
    assert main(["train", "--report", "Nobody", "--out", str(out)]) == 1
    assert f"no training session of 'Nobody' in the log (trainees: {TRAINEE})" in capsys.readouterr().err
    assert main(["train", "--report", TRAINEE, "--out", str(out / "elsewhere")]) == 1
    assert "no training log" in capsys.readouterr().err


def test_the_level_comes_from_the_case_and_is_never_a_question_mark(tmp_path):
    """The bundled cases name their level in the DICOM series description; a manifest entry or
    the command line says it first; a case that names none says "level not recorded"."""
    assert {r.name: case_level(r.lateral.parent).level for r in bundled_recordings()} == {
        "posterior-leak": "L1",
        "no-leak": "T12",
        "venous-leak": "L3",
    }
    case = tmp_path / "case"
    case.mkdir()
    ds = pydicom.dcmread(default_recording().lateral)
    ds.SeriesDescription = "lateral fluoroscopy"
    ds.save_as(case / "lateral.dcm")
    unknown = case_level(case)
    assert unknown.level is None and unknown.label == "level not recorded"
    assert case_level(case, "t11").label == "level T11"
    (tmp_path / "manifest.json").write_text(json.dumps({"recordings": [{"name": "case", "level": "L2"}]}))
    assert case_level(case).level == "L2"


def test_a_level_span_or_two_levels_are_not_guessed_from(tmp_path):
    """ "L4/5" and "L5-S1" name a span, not a level; the first description that names a level
    decides (the series over the study, which may cover several); an unknown --level is refused."""
    ds = pydicom.dcmread(default_recording().lateral, stop_before_pixels=True)

    def level_of(series: str, study: str = "") -> str | None:
        case = tmp_path / f"case{abs(hash((series, study)))}"
        case.mkdir()
        ds.SeriesDescription, ds.StudyDescription = series, study
        ds.save_as(case / "lateral.dcm")
        return case_level(case).level

    assert level_of("VP L4/5") is None
    assert level_of("kyphoplasty L5-S1") is None
    assert level_of("T12-L1 bipedicular") is None
    assert level_of("VERTEBROPLASTY_L1") == "L1"
    assert level_of("VP L2", study="L1 L2 L3 augmentation") == "L2"
    assert level_of("lateral", study="L1 and L2") is None
    with pytest.raises(MonitorError, match="not a vertebral level"):
        case_level(tmp_path, "foo bar")


def test_a_case_closed_before_its_end_is_abandoned_not_scored(qapp, tmp_path, capsys):
    """A trainee who closes the window mid-case stops the replay and leaves no training-log
    entry (it would count as "never stopped"); the command says so and fails. Timed from the
    close, at half speed: the rest of the case would take over 11 s, stopping takes a few
    (the consumers' start-up, 3-11 s on a loaded machine, is not counted)."""
    case = default_recording().lateral.parent
    closed = {}
    deadline = time.monotonic() + 120  # no frame shown by then: closed anyway, and the test fails

    def close_once_frames_show():
        for w in QtWidgets.QApplication.topLevelWidgets():  # an earlier test's window stays, hidden
            if not (isinstance(w, MonitorWindow) and w.training and w.isVisible()):
                continue
            shown = w.views["lateral"].shown_frame or 0
            if shown >= 3 or time.monotonic() > deadline:
                closed.setdefault("frame", shown)
                closed.setdefault("at", time.monotonic())
                w.close()

    timer = QtCore.QTimer()
    timer.timeout.connect(close_once_frames_show)
    timer.start(20)
    try:
        code = main(["train", str(case), "--out", str(tmp_path), "--trainee", TRAINEE, "--speed", "0.5"])
    finally:
        timer.stop()
    assert code == 1 and "closed before the end of the case: not scored" in capsys.readouterr().err
    assert closed["frame"] >= 3 and not (tmp_path / "training-log.jsonl").exists()
    stopping = time.monotonic() - closed["at"]
    assert stopping < 8.0, f"{stopping:.1f} s from the close to the end: the replay ran on"


def test_a_logged_session_is_trained_on_as_it_was_measured(qapp, tmp_path):
    """A logged session run with a wall given on its command line, the operator redrawing it
    live: ``monitor train`` of that log measures as the session did (the command line's wall
    from its meta, the live wall re-applied before the same frame, logged as the replay's), so
    the monitor's alarms the trainee is scored against are the logged session's own."""
    from monitor.analyzer import analyse_source
    from monitor.io.sources import DicomPairSource
    from tests.test_session_log import _judged, _wait_for, operated_run

    rec = default_recording()
    clean = DicomPairSource(rec.lateral, rec.ap)
    found = next(r.overlay["wall"] for _, r in analyse_source(clean) if r.overlay.get("wall"))
    clean.close()
    given = tuple(tuple(p) for p in found)  # as --wall gives it
    live = tmp_path / "live"
    drawn = [[x - 5.0, y] for x, y in found]

    def operate(send):
        _wait_for(live, "result", 16)
        send("wall", drawn)

    wall = {"analysis": {"posterior_wall": given}, "meta": {"posterior_wall": [list(p) for p in given]}}
    assert operated_run(live, operate, speed=2.0, **wall) in (0, 4)
    results, alarms, commands = _judged(live)
    assert [c[:2] for c in commands] == [("wall", drawn)], commands
    out = tmp_path / "training"
    said, told = io.StringIO(), io.StringIO()

    def close_once_scored():  # as the trainee does; the window's own --close-when-done also quits
        for w in QtWidgets.QApplication.topLevelWidgets():  # the app, which would end the next
            if isinstance(w, MonitorWindow) and w.training and w.verdict.isVisible():  # test's loop
                w.close()

    timer = QtCore.QTimer()
    timer.timeout.connect(close_once_scored)
    timer.start(50)
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(told):
            trained = main(["train", str(live), "--out", str(out), "--trainee", TRAINEE, "--speed", "8"])
    finally:
        timer.stop()
    assert trained == 0, said.getvalue() + told.getvalue()
    # whoever runs the case is told what it is measured with: the live redraw, with its time
    assert re.search(
        r"re-applying the operator's edits the session logged.*: wall at \d+\.\d\d s", told.getvalue()
    )
    (entry,) = [json.loads(line) for line in (out / "training-log.jsonl").read_text().splitlines()]
    again, again_alarms, again_commands = _judged(Path(entry["session"]))
    kept = SessionStore.open(Path(entry["session"]))
    try:  # the training session's log keeps what it was measured with: it replays as it ran
        assert kept.meta()["posterior_wall"] == [list(p) for p in given]
    finally:
        kept.close()
    assert again_commands == commands and again_alarms == alarms
    assert again == results
    assert any(r[3] is not None for r in results)  # distances measured, and the same
