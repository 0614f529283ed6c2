"""The live view, a real Qt widget rendered offscreen, fed by real ZeroMQ streams."""

from __future__ import annotations

import os
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from monitor.io.store import SessionStore  # noqa: E402
from monitor.io.transport import Publisher  # noqa: E402
from monitor.messages import End, FrameHeader, Result, Status  # noqa: E402
from monitor.pipeline import Endpoints  # noqa: E402
from monitor.recordings import default_recording  # noqa: E402
from monitor.training import score_training  # noqa: E402
from monitor.viewer import MonitorWindow, QtCore, QtGui  # noqa: E402
from monitor.vision.caveats import Caveat, CaveatCode, render_status  # noqa: E402
from tests.test_pipeline import monitor  # noqa: E402

SHAPE = (256, 320)


class Streams:
    """A source's frames and an analyzer's results, published on private endpoints."""

    def __init__(self):
        self.endpoints = Endpoints.private()
        self.frames = Publisher(self.endpoints.frames, session="t")
        self.results = Publisher(self.endpoints.results, session="t", source="analyzer")
        self.seq = 0

    def frame(self, index: int, plane="lateral") -> None:
        pixels = np.full(SHAPE, 1000 + index, np.uint16)
        pixels[100:150, 100:200] = 400  # something to see
        header = FrameHeader(
            "t", plane, self.seq, index, index / 10, time.time(), SHAPE, "uint16", "MONOCHROME2", 12
        )
        self.frames.send_frame(header, pixels)
        self.seq += 1

    def result(self, index: int, caveats: tuple[Caveat, ...] = (), plane: str = "lateral", **fields) -> None:
        status, wire = render_status(caveats), [c.as_wire() for c in caveats]
        self.results.send(
            Result("t", plane, index, index, index / 10, 0.0, time.time(), status, caveats=wire, **fields)
        )

    def live(self, index: int, plane: str = "lateral", **fields) -> None:
        """A result with its frame. A window shown only results for its stale_s (0.5 s here)
        greys its readouts as stale; on a loaded machine a pump can outlast that (the volume
        readout's colour failed so, session 71), so a pump that checks a colour sends both."""
        self.frame(index, plane)
        self.result(index, plane=plane, **fields)

    def close(self):
        self.frames.close()
        self.results.close()


UNCALIBRATED = Caveat(CaveatCode.UNCALIBRATED, "no millimetre scale, so no wall distance")


@pytest.fixture
def streams():
    s = Streams()
    yield s
    s.close()


@pytest.fixture
def window(qtbot, streams):
    w = MonitorWindow(streams.endpoints.frames, streams.endpoints.results, None, stale_s=0.5)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    return w


def pump(qtbot, send, condition, timeout=10.0):
    """Publish until the window shows what is expected (subscriptions take a moment to join)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the window never showed it"
        send()
        qtbot.wait(30)


WALL = [[200.0, 80.0], [202.0, 170.0]]
OVERLAY = {
    "body": [[200, 80], [120, 82], [118, 168], [202, 170]],
    "wall": WALL,
    "safety_line": [[184.0, 80.0], [186.0, 170.0]],
    "cement": [[[150, 110], [170, 110], [170, 130], [150, 130]]],
    "front": [172.0, 120.0],
    "leaks": [],
}


def test_the_view_follows_a_real_stream_of_frames_and_results(qtbot, streams, window):
    pump(qtbot, lambda: streams.frame(5), lambda: window.views["lateral"].shown_frame == 5)
    image = window.views["lateral"].image.image
    assert image.shape == SHAPE and image[0, 0] == 1005
    pump(
        qtbot,
        lambda: streams.live(
            5, level="L2", distance_mm=6.2, volume_ml=1.25, seconds_to_line=2.4, overlay=OVERLAY
        ),
        # its colour too: a result may land a poll before its frame, on a view gone stale
        lambda: (
            "6.2" in window.readouts["distance"].text()
            and "ffd200" in window.readouts["distance"].styleSheet()
        ),
    )
    assert window.readouts["level"].text() == "LEVEL L2"
    assert window.readouts["volume"].text() == "VOLUME  1.25 mL"
    assert window.readouts["to_line"].text() == "5 mm LINE in 2.4 s"
    x, y = window.views["lateral"].wall.getData()
    assert list(zip(x, y, strict=True)) == [tuple(p) for p in WALL]
    assert "ffd200" in window.readouts["distance"].styleSheet()  # under 7 mm: yellow
    frame = window.grab().toImage()
    assert frame.width() > 0  # it renders


def test_video_without_a_calibration_shows_uncalibrated_not_millimetres(qtbot, streams, window):
    pump(qtbot, lambda: streams.frame(3), lambda: window.views["lateral"].shown_frame == 3)
    pump(
        qtbot,
        lambda: streams.live(3, caveats=(UNCALIBRATED,)),
        lambda: (
            "UNCALIBRATED" in window.readouts["distance"].text()
            and "ff9900" in window.readouts["distance"].styleSheet()
        ),
    )
    assert "mm" not in window.readouts["distance"].text().replace("no mm", "")
    assert "ff9900" in window.readouts["distance"].styleSheet()


def test_an_analysis_lagging_behind_the_image_is_said(qtbot, streams, window):
    pump(qtbot, lambda: streams.frame(12), lambda: window.views["lateral"].shown_frame == 12)

    def send():
        streams.frame(12)  # the image stays live ...
        streams.result(2, overlay=OVERLAY)  # ... while the analysis is a second behind

    pump(qtbot, send, lambda: "BEHIND" in window.status_line.text())
    assert window.status_line.text().startswith("ANALYSIS 1.0 s BEHIND THE IMAGE")
    title = window.views["lateral"].title.textItem
    assert "overlay of frame 2" in title.toPlainText()
    # the frame's own result: the note goes (it used to stay until the next frame, seen in an X window)
    pump(qtbot, lambda: streams.result(12, overlay=OVERLAY), lambda: "overlay" not in title.toPlainText())
    assert title.toPlainText() == "LATERAL  frame 12"


def test_the_analyzers_no_new_frame_notice_goes_when_the_frames_resume(qtbot, streams, window):
    """Its "stale" notice is about a spell that its "resumed" ends: it used to stay the status
    line's newest notice, "no new frame for 2946 ms" over a live stream (seen in an X window)."""

    def live():
        streams.frame(1)
        streams.result(1)

    pump(qtbot, live, lambda: window.state.planes["lateral"].result is not None)
    before = window.status_line.text()  # "live: ...", or this machine's want of a sound device
    stale = Status("t", "analyzer", time.time(), "stale", "no new frame for 2946 ms", 2946.0)
    pump(qtbot, lambda: (live(), streams.results.send(stale)), lambda: "2946" in window.status_line.text())
    resumed = Status("t", "analyzer", time.time(), "resumed", "frames resumed after 2950 ms", 2950.0)
    said = window.status_line.text
    pump(qtbot, lambda: (live(), streams.results.send(resumed)), lambda: "2946" not in said())
    assert window.status_line.text() == before


def test_frames_not_checked_show_a_standing_not_monitored_state(qtbot, streams, window):
    """Frames the analyzer could not check (here: no millimetre scale) are not "no alarm":
    the banner says NOT MONITORED with the reason, in its own colour, for as long as they
    are not checked; checked frames bring back "no alarm"."""
    pump(qtbot, lambda: streams.frame(3), lambda: window.views["lateral"].shown_frame == 3)
    pump(
        qtbot,
        lambda: streams.result(3, caveats=(UNCALIBRATED,), checks=[]),
        lambda: window.banner.text().startswith("NOT MONITORED"),
    )
    assert (
        window.banner.text()
        == "NOT MONITORED: lateral: uncalibrated: no millimetre scale, so no wall distance"
    )
    assert window.banner.styleSheet() == "background:#6b2fa0; color:white;"
    qtbot.wait(700)  # a standing state: it neither flashes nor goes away by itself
    assert window.banner.text().startswith("NOT MONITORED")
    if os.environ.get("MONITOR_SCREENSHOTS"):  # a folder to look at the window in
        window.grab().save(str(Path(os.environ["MONITOR_SCREENSHOTS"]) / "not-monitored.png"))
    for i in range(4, 4 + 20):  # a full window of checked frames
        streams.result(i, checks=["proximity", "leak"])
    qtbot.waitUntil(lambda: window.banner.text() == "no alarm", timeout=5000)


def test_a_lateral_view_gone_quiet_while_the_ap_goes_on_is_not_monitored(qtbot, streams, window):
    pump(qtbot, lambda: streams.frame(3), lambda: window.views["lateral"].shown_frame == 3)
    pump(qtbot, lambda: streams.result(3, checks=["proximity", "leak"]), lambda: window.state.stream_at)
    assert window.banner.text() == "no alarm"
    for i in range(4, 20):  # AP results for 1.6 s more, no lateral one
        streams.results.send(Result("t", "ap", i, i, i / 10, 0.0, time.time(), "ok", checks=["leak"]))
    qtbot.waitUntil(lambda: window.banner.text().startswith("NOT MONITORED"), timeout=5000)
    assert window.banner.text() == "NOT MONITORED: lateral: no frame checked against the 5 mm rule for 1.6 s"


def test_an_alarm_raises_the_banner_until_acknowledged(qtbot, streams, window):
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    leak = {"kind": "extravasation", "priority": "high", "frame": 9, "plane": "lateral", "site": "posterior"}
    leak["distance_mm"] = -1.0
    pump(qtbot, lambda: streams.result(9, alarms=[leak]), lambda: "LEAK" in window.banner.text())
    assert window.banner.text() == "HIGH: LEAK (posterior) in lateral"
    qtbot.wait(1100)  # it flashes: both phases are red
    styles = set()
    for _ in range(4):
        styles.add(window.banner.styleSheet())
        qtbot.wait(300)
    assert styles == {"background:#d62728; color:white;", "background:#5a1010; color:white;"}
    streams.results.send(Status("t", "viewer", time.time(), "acknowledge", "1 alarm(s) acknowledged"))
    qtbot.waitUntil(lambda: window.banner.text() == "no alarm", timeout=5000)


def test_no_signal_appears_after_the_timeout_and_clears_when_frames_resume(qtbot, streams, window):
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    pump(
        qtbot,
        lambda: streams.result(1, overlay=OVERLAY),
        lambda: len(window.views["lateral"].wall.getData()[0]) == 2,
    )
    assert window.views["lateral"].no_signal.textItem.toPlainText() == ""
    qtbot.waitUntil(
        lambda: "NO SIGNAL" in window.views["lateral"].no_signal.textItem.toPlainText(), timeout=3000
    )
    assert window.views["lateral"].image.opacity() < 0.5
    assert (
        window.views["lateral"].wall.getData()[0] is None
        or len(window.views["lateral"].wall.getData()[0]) == 0
    )
    assert "NO SIGNAL" in window.status_line.text()
    pump(qtbot, lambda: streams.frame(2), lambda: window.views["lateral"].shown_frame == 2)
    qtbot.waitUntil(lambda: window.views["lateral"].no_signal.textItem.toPlainText() == "", timeout=2000)
    assert window.views["lateral"].image.opacity() == 1.0


def test_a_view_whose_frames_stop_while_the_other_goes_on_shows_no_signal_alone(qtbot, streams, window):
    """An AP grabber unplugged mid-level: the AP's last image and overlay stayed shown as if
    live while the lateral went on. NO SIGNAL is now drawn over the AP alone, its overlay
    hidden, and it goes when the AP's frames come back."""
    ap, lateral = window.views["ap"], window.views["lateral"]
    pump(qtbot, lambda: streams.frame(1, "ap"), lambda: ap.shown_frame == 1)

    def wall_drawn():
        xs = ap.wall.getData()[0]
        return xs is not None and len(xs) == 2

    pump(qtbot, lambda: streams.result(1, plane="ap", overlay=OVERLAY), wall_drawn)
    deadline = time.monotonic() + 1.5
    i = 2
    while time.monotonic() < deadline:  # lateral frames for 1.5 s, no AP one
        streams.frame(i)
        qtbot.wait(100)
        i += 1
    qtbot.waitUntil(lambda: "NO SIGNAL" in ap.no_signal.textItem.toPlainText(), timeout=3000)
    assert lateral.no_signal.textItem.toPlainText() == ""  # the lateral is live
    assert ap.image.opacity() < 0.5 and lateral.image.opacity() == 1.0
    assert not wall_drawn()
    assert "NO SIGNAL" not in window.status_line.text()  # the stream is live: not said of both
    pump(qtbot, lambda: (streams.frame(i, "ap"), streams.frame(i + 1)), lambda: ap.shown_frame == i)
    qtbot.waitUntil(lambda: ap.no_signal.textItem.toPlainText() == "", timeout=2000)
    assert ap.image.opacity() == 1.0


def test_a_view_at_its_own_slow_rate_is_not_said_silent():
    """Biplane, the lateral at 7.5 frames/s, the AP at 0.5 (its own pulse rate): the viewer drew
    NO SIGNAL over the live AP for half of every AP interval (a fixed 1 s limit), where the
    analysis allows 3 of the view's own steps (an independent review, session 73)."""
    from monitor.viewstate import ViewState

    state, pixels, said = ViewState(), np.zeros((8, 8), np.uint16), []
    for k in range(150):  # 20 s
        t = k / 7.5
        state.frame("lateral", pixels, k, "MONOCHROME2", t, t)
        if k % 15 == 0:
            state.frame("ap", pixels, k // 15, "MONOCHROME2", t, t)
        said.append(state.view_silent_for("ap", t) is not None)
    assert not any(said[30:]), said.index(True, 30)  # once its second frame has told its rate
    # replayed at a quarter of its pace: its steps as they arrive are four times as long (on the
    # recording's clock against arrival ages, it was said silent on 24 of 120 frames: a review)
    slow, said = ViewState(), []
    for k in range(150):
        t = k / 7.5
        slow.frame("lateral", pixels, k, "MONOCHROME2", 4 * t, t)
        if k % 15 == 0:
            slow.frame("ap", pixels, k // 15, "MONOCHROME2", 4 * t, t)
        said.append(slow.view_silent_for("ap", 4 * t) is not None)
    assert not any(said[30:])
    for k in range(150, 200):  # the AP stops: said 6 s (3 of its steps) after its last
        state.frame("lateral", pixels, k, "MONOCHROME2", k / 7.5, k / 7.5)
    assert state.view_silent_for("ap", 199 / 7.5) is not None


def test_a_view_whose_image_is_held_says_so_over_it(qtbot, streams, window):
    """Fluoroscopy off, the grabber sending the last image: the analysis skips the frames as no
    new exposure (image-held), and the view showed them as a live image. It is greyed under
    IMAGE HELD until a new exposure is read."""
    lateral = window.views["lateral"]
    held = Caveat(CaveatCode.IMAGE_HELD, "image held: no new exposure since frame 3 (...)")
    pump(qtbot, lambda: streams.frame(3), lambda: lateral.shown_frame == 3)
    pump(
        qtbot, lambda: (streams.frame(8), streams.result(8, (held,))), lambda: "IMAGE HELD" in _label(lateral)
    )
    assert lateral.image.opacity() < 0.5
    pump(qtbot, lambda: (streams.frame(9), streams.result(9)), lambda: _label(lateral) == "")
    assert lateral.image.opacity() == 1.0
    # held again, then new frames the analysis has not answered (stopped, or behind): the label
    # stands for frames acquired within 0.5 s of the held one, not over new X-ray after them
    pump(
        qtbot,
        lambda: (streams.frame(10), streams.result(10, (held,))),
        lambda: "IMAGE HELD" in _label(lateral),
    )
    pump(qtbot, lambda: streams.frame(16), lambda: lateral.shown_frame == 16 and _label(lateral) == "")


def _label(view) -> str:
    return view.no_signal.textItem.toPlainText()


def test_an_operator_action_reaches_the_session_log(qtbot, tmp_path):
    e = Endpoints.private()
    rec = default_recording()
    proc = monitor(
        "replay", "--lateral", rec.lateral, "--ap", rec.ap, "--session", tmp_path / "s", "--headless",
        "--speed", "1", "--level", "L1", *e.args(),
    )  # fmt: skip
    w = MonitorWindow(e.frames, e.results, e.control)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: (w.views["lateral"].shown_frame or 0) >= 5, timeout=30000)
    # The operator adjusts a body the analyzer has found: on a loaded machine the analysis
    # lags the image, and a box sent before the AP baseline exists is rightly refused.
    qtbot.waitUntil(lambda: all(_found_body(w, plane) for plane in ("lateral", "ap")), timeout=30000)
    qtbot.mouseClick(w.syringe_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.mouseClick(w.body_button, QtCore.Qt.MouseButton.LeftButton)  # boxes over the bodies found
    editor = w.views["ap"].body_editor
    editor.setPos(editor.pos() + QtCore.QPointF(3, 0), finish=True)  # the operator nudges the AP box
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    events = SessionStore.open(tmp_path / "s").events()
    syringe = [ev for ev in events if ev["event"] == "syringe"]
    assert len(syringe) == 1 and syringe[0]["source"] == "viewer" and syringe[0]["value"] == 1.0
    assert syringe[0]["level"] == "L1" and 0 < syringe[0]["acq_time"] < 48 / 7.5
    body = [ev for ev in events if ev["event"] == "body"]  # applied, not rejected
    rejected = [ev for ev in events if ev["event"] == "rejected-command"]
    assert len(body) == 1 and body[0]["value"]["plane"] == "ap" and "replaced" in body[0]["detail"], rejected


def _found_body(window: MonitorWindow, plane: str) -> bool:
    """Whether the analyzer's latest result for a view carries the body it found."""
    result = window.state.planes[plane].result
    return result is not None and bool(result.overlay.get("body"))


def test_training_scores_stops_against_the_monitors_alarms():
    """A level where the monitor raised the 5 mm alarm at frame 10 and a posterior leak at 43."""
    frames = [{"frame": i, "time_s": i / 7.5, "distance_mm": None, "volume_ml": 0.1 * i} for i in range(48)]
    level = {
        "level": "L1",
        "frames": frames,
        "alarms": [
            {"kind": "proximity", "priority": "medium", "frame": 7, "site": None, "time_s": 7 / 7.5},
            {"kind": "proximity", "priority": "high", "frame": 10, "site": None, "time_s": 10 / 7.5},
            {
                "kind": "extravasation",
                "priority": "high",
                "frame": 43,
                "site": "posterior",
                "time_s": 43 / 7.5,
            },
        ],
    }
    late = score_training([14], level)
    assert late["stops"][0]["frames_after_proximity"] == 4
    assert late["stops"][0]["seconds_after_proximity"] == pytest.approx(4 / 7.5, abs=0.001)
    assert late["stops"][0]["ml_past_5mm_line"] == pytest.approx(0.4)
    assert late["stops"][0]["ml_after_leak"] == 0.0
    assert (
        late["verdict"][0]
        == "stopped 0.53 s after the monitor's alarm for the 5 mm line: 0.40 mL past the line"
    )
    early = score_training([8, 44], level)
    assert early["stops"][0]["frames_after_proximity"] == -2 and early["stops"][0]["ml_past_5mm_line"] == 0.0
    assert early["stops"][1]["ml_after_leak"] == pytest.approx(0.1)
    assert early["verdict"][0] == "stopped 0.27 s before the monitor's alarm for the 5 mm line"
    never = score_training([], level)
    assert never["verdict"] == [
        "never stopped: the monitor alarmed for the 5 mm line at 1.33 s, 1.00 mL",
        "never stopped: the monitor alarmed for the posterior leak at 5.73 s, 4.30 mL",
    ]


def test_the_end_of_a_recording_is_said_and_keeps_the_last_overlay(qtbot, streams, window):
    """After the end the view says RECORDING ENDED over the last image, keeps its overlay, and
    is neither NO SIGNAL nor sounding; while live, the label (and its dark backdrop) is hidden,
    so no bar sits at the image centre."""
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    pump(
        qtbot,
        lambda: streams.result(1, overlay=OVERLAY, distance_mm=-2.0),
        lambda: len(window.views["lateral"].wall.getData()[0]) == 2,
    )
    assert not window.views["lateral"].no_signal.isVisible()  # live: no backdrop at the centre
    assert window.readouts["to_line"].text() == "BEYOND THE WALL"  # not "inside the 5 mm line"
    pump(
        qtbot,
        lambda: streams.results.send(End("t", "analyzer", time.time(), {"lateral": 2})),
        lambda: window.state.ended is not None,
    )
    qtbot.wait(800)  # past the 0.5 s stale time: an ended stream is not a lost one
    label = window.views["lateral"].no_signal
    assert label.isVisible() and label.textItem.toPlainText() == "RECORDING ENDED"
    assert window.views["lateral"].image.opacity() == 1.0
    assert len(window.views["lateral"].wall.getData()[0]) == 2  # the last overlay kept
    assert window.status_line.text().startswith("RECORDING ENDED")
    window.state.end("aborted: the grabber stopped")
    window.refresh(time.monotonic())
    assert label.textItem.toPlainText() == "SOURCE STOPPED: aborted: the grabber stopped"


def test_an_acknowledged_alarm_stays_shown_steady_while_its_condition_lasts(qtbot, streams, window):
    """IEC 60601-1-8: acknowledging silences an alarm; it does not hide a condition that is
    still there. With the analyzer's alarm states on the wire, the banner keeps an acknowledged
    proximity alarm, steady and with the current distance, until the analyzer clears it."""
    from monitor.viewer import BANNER

    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    alarm = {"id": "L1/proximity/wall/high/3", "kind": "proximity", "priority": "high", "frame": 3}
    alarm |= {"plane": "lateral", "site": None, "distance_mm": 4.8}
    raised = [{"state": "raised", **alarm}]
    pump(
        qtbot,
        lambda: streams.result(3, distance_mm=4.8, alarm_changes=raised),
        lambda: "HIGH" in window.banner.text(),
    )
    pump(qtbot, lambda: streams.result(4, distance_mm=2.0), lambda: "2.0 mm" in window.banner.text())
    assert window.banner.text() == "HIGH: cement 2.0 mm from the wall"  # now, not 4.8 at onset
    streams.results.send(Status("t", "viewer", time.time(), "acknowledge", "1 alarm(s) acknowledged"))
    qtbot.waitUntil(lambda: window.banner.text().startswith("ACKNOWLEDGED"), timeout=5000)
    assert window.banner.text() == "ACKNOWLEDGED HIGH: cement 2.0 mm from the wall"
    styles = set()
    for _ in range(5):  # steady: not the flashing pair
        styles.add(window.banner.styleSheet())
        qtbot.wait(250)
    assert styles == {BANNER["high-acknowledged"]}
    pump(qtbot, lambda: streams.result(5, distance_mm=-1.5), lambda: "BEYOND" in window.banner.text())
    cleared = [{"state": "cleared", **alarm}]
    pump(
        qtbot,
        lambda: streams.result(6, distance_mm=6.2, alarm_changes=cleared),
        lambda: window.banner.text() == "no alarm",
    )


def test_the_analyzers_standing_alarms_put_right_an_alarm_the_view_pieced_together_wrong(
    qtbot, streams, window
):
    """A proximity alarm raised and cleared before it was acknowledged; the analyzer's
    "acknowledge" status reaches the view (the alarm goes: neither active nor unacknowledged),
    then the result carrying its "acknowledged" change. Taken alone, that change made the view
    show the alarm again, "ACKNOWLEDGED HIGH", for the rest of the level, though the analyzer
    shows nothing. The analyzer's standing alarms on the next result (none) are its own list
    and replace what the view pieced together: no alarm. And a view's list is replaced the
    other way too: an alarm standing there that the view never heard of is shown. The same
    list on the analyzer's heartbeat, when no frames come, is taken as well."""
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    alarm = {"id": "L1/proximity/wall/high/3", "kind": "proximity", "priority": "high", "frame": 3}
    alarm |= {"plane": "lateral", "site": None, "distance_mm": 4.8}
    pump(
        qtbot,
        lambda: streams.result(3, distance_mm=4.8, alarm_changes=[{"state": "raised", **alarm}]),
        lambda: "HIGH" in window.banner.text(),
    )
    pump(
        qtbot,
        lambda: streams.result(4, distance_mm=6.2, alarm_changes=[{"state": "cleared", **alarm}]),
        lambda: window.state.distance_mm == 6.2,
    )
    streams.results.send(Status("t", "analyzer", time.time(), "acknowledge", "1 alarm(s) acknowledged"))
    pump(
        qtbot,
        lambda: streams.result(5, distance_mm=6.3, alarm_changes=[{"state": "acknowledged", **alarm}]),
        lambda: window.state.distance_mm == 6.3,
    )
    pump(
        qtbot,
        lambda: streams.result(6, distance_mm=6.4, standing_alarms=[]),
        lambda: window.state.distance_mm == 6.4,
    )
    qtbot.waitUntil(lambda: window.banner.text() == "no alarm", timeout=5000)
    leak = {"id": "L1/extravasation/posterior/high/5", "kind": "extravasation", "priority": "high"}
    leak |= {"frame": 5, "plane": "lateral", "site": "posterior", "distance_mm": -2.0}
    leak |= {"active": True, "acknowledged": False}
    pump(
        qtbot,
        lambda: streams.result(7, distance_mm=-2.0, standing_alarms=[leak]),
        lambda: "LEAK" in window.banner.text().upper(),
    )
    assert window.banner.text().startswith("HIGH"), window.banner.text()
    # with no frames coming (or after the end) the list comes on the analyzer's heartbeat
    pump(qtbot, lambda: streams.results.heartbeat([]), lambda: window.banner.text() == "no alarm")
    pump(qtbot, lambda: streams.results.heartbeat([leak]), lambda: "LEAK" in window.banner.text().upper())


def test_a_viewer_that_cannot_open_stops_the_run_with_one_line(monkeypatch):
    """A display whose Qt platform cannot load (here a platform that does not exist; on a bare
    machine the xcb libraries missing) used to run on with no window and exit 0."""
    import subprocess
    import sys

    from monitor.recordings import default_recording
    from tests.conftest import own_endpoints

    rec = default_recording()
    env = {**os.environ, "QT_QPA_PLATFORM": "no-such-platform"}
    args = own_endpoints(("replay", "--lateral", str(rec.lateral), "--ap", str(rec.ap), "--speed", "0"))
    done = subprocess.run(
        [sys.executable, "-m", "monitor", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "the viewer cannot open a window here" in done.stderr and "--headless" in done.stderr
    assert "no-such-platform" in done.stderr


def test_a_wall_not_confirmed_asks_the_operator_and_the_button_confirms_it(qtbot, streams):
    """While the analyzer withholds the 5 mm rule on a wall it does not trust, the view says
    WALL NOT CONFIRMED in the banner and the distance readout, draws the wall dashed without
    its 5 mm line, and its Confirm wall button sends the command over the control socket;
    an armed wall brings the plain view back."""
    import zmq

    from monitor.io.transport import bind_endpoint
    from monitor.messages import Command, decode

    control = zmq.Context.instance().socket(zmq.PULL)
    control.setsockopt(zmq.LINGER, 0)
    bind_endpoint(control, streams.endpoints.control, "control")
    window = MonitorWindow(streams.endpoints.frames, streams.endpoints.results, streams.endpoints.control)
    qtbot.addWidget(window)
    window.resize(1200, 800)
    window.show()
    try:
        unconfirmed = Caveat(
            CaveatCode.WALL_NOT_CONFIRMED,
            "WALL NOT CONFIRMED, the 5 mm rule is not armed (wall confidence 0.04: the body's outline"
            " seen on only 46% of its length): confirm the wall or draw it; leaks are still read, but a"
            " leak off this outline other than behind the wall may be only a possible one (the AP view"
            " backing it, or the body drawn, can make it sure), a posterior leak is confirmed by its"
            " growth rather than at once by a front beyond this wall, and cement running back along the"
            " needle is read only once the wall is armed",
        )
        overlay = {**OVERLAY, "wall_state": "not-confirmed", "wall_confirmable": True}
        overlay.pop("front")
        pump(qtbot, lambda: streams.frame(4), lambda: window.views["lateral"].shown_frame == 4)
        # a wall found that is not seen in the images (or refuted) is to be drawn: no Confirm
        pump(
            qtbot,
            lambda: streams.result(
                3, caveats=(unconfirmed,), checks=["leak"], overlay={**overlay, "wall_confirmable": False}
            ),
            lambda: window.banner.text().startswith("WALL NOT CONFIRMED"),
        )
        assert not window.confirm_button.isEnabled()
        assert "draw the posterior wall" in window.confirm_button.toolTip()
        assert window.banner.text().endswith("cannot be trusted: draw it (Adjust wall)")
        # ... and Adjust wall does not start on it: a nudge would arm the rule on the wall refused
        from monitor.viewer import _default_wall, _roi_points

        window.wall_button.setChecked(True)
        view = window.views["lateral"]
        assert np.ravel(_roi_points(view.wall_editor)) == pytest.approx(
            np.ravel(_default_wall(view.shape)), abs=0.1
        )
        window.wall_button.setChecked(False)
        if os.environ.get("MONITOR_SCREENSHOTS"):
            window.grab().save(str(Path(os.environ["MONITOR_SCREENSHOTS"]) / "wall-to-draw.png"))
        pump(
            qtbot,
            lambda: streams.result(4, caveats=(unconfirmed,), checks=["leak"], overlay=overlay),
            lambda: window.confirm_button.isEnabled(),
        )
        assert window.banner.text().endswith("Confirm wall, or Adjust wall")
        assert window.readouts["distance"].text() == "WALL NOT CONFIRMED"
        assert "arm the 5 mm rule" in window.confirm_button.toolTip()
        view = window.views["lateral"]
        assert view.wall.opts["pen"].style() == QtCore.Qt.PenStyle.DashLine
        assert view.safety.getData()[0] is None or len(view.safety.getData()[0]) == 0
        if os.environ.get("MONITOR_SCREENSHOTS"):
            window.grab().save(str(Path(os.environ["MONITOR_SCREENSHOTS"]) / "wall-not-confirmed.png"))
        qtbot.mouseClick(window.confirm_button, QtCore.Qt.MouseButton.LeftButton)
        assert control.poll(5000), "no command arrived"
        command = decode(control.recv_multipart())
        assert isinstance(command, Command) and command.action == "confirm-wall"
        pump(
            qtbot,
            lambda: streams.result(
                5, distance_mm=9.0, checks=["proximity", "leak"], overlay={**OVERLAY, "wall_state": "armed"}
            ),  # fmt: skip
            lambda: window.readouts["distance"].text() == "WALL  +9.0 mm",
        )
        assert not window.confirm_button.isEnabled()
        assert view.wall.opts["pen"].style() == QtCore.Qt.PenStyle.SolidLine
        assert len(view.safety.getData()[0]) == 2
    finally:
        control.close()


def test_the_known_cleft_button_says_the_levels_cleft_and_follows_the_analyzer(qtbot, streams):
    """The Known cleft button shows what the analyzer says of the level (a cleft the operator knows
    of, which makes a disc lobe with no outline a possible leak), in words and held down, and sends
    the "cleft" command with the state the operator chose over the control socket. A press stands
    on the screen though results made before the analyzer took it still say the old state, and
    once the analyzer says it done (its "cleft" status) it stands with no frames coming; the
    results govern again after that, and a new level starts with the button clear."""
    import zmq

    from monitor.io.transport import bind_endpoint
    from monitor.messages import Command, Status, decode

    control = zmq.Context.instance().socket(zmq.PULL)
    control.setsockopt(zmq.LINGER, 0)
    bind_endpoint(control, streams.endpoints.control, "control")
    window = MonitorWindow(streams.endpoints.frames, streams.endpoints.results, streams.endpoints.control)
    qtbot.addWidget(window)
    window.show()
    button = window.cleft_button
    try:
        pump(qtbot, lambda: streams.frame(4), lambda: window.views["lateral"].shown_frame == 4)
        pump(qtbot, lambda: streams.result(4, level="L1", known_cleft=True), button.isChecked)
        assert button.text() == "Known cleft: YES"
        qtbot.mouseClick(button, QtCore.Qt.MouseButton.LeftButton)  # the operator: no cleft
        assert control.poll(5000), "no command arrived"
        command = decode(control.recv_multipart())
        assert isinstance(command, Command) and (command.action, command.value) == ("cleft", False)
        for _ in range(10):  # results made before the analyzer took the command
            streams.result(5, level="L1", known_cleft=True)
            qtbot.wait(30)
            assert not button.isChecked() and button.text() == "Known cleft: no"
        said = Status("t", "viewer", time.time(), "cleft", "level L1: no cleft known; ...")
        pump(qtbot, lambda: streams.results.send(said), lambda: window.state._cleft_sent is None)
        qtbot.wait(3500)  # past the time a press is shown on its own, no frame coming
        assert not button.isChecked()
        pump(
            qtbot, lambda: streams.result(6, level="L1", known_cleft=True), button.isChecked
        )  # another view's
        pump(
            qtbot,
            lambda: streams.result(7, level="L2", known_cleft=None),  # an analyzer that does not say
            lambda: not button.isChecked(),
        )
        assert button.text() == "Known cleft: no"
    finally:
        control.close()


def test_the_alarm_is_heard_as_its_iec_burst_until_paused_with_a_countdown(qtbot, streams, window):
    """A high alarm plays the high-priority burst at once and again after its interburst
    interval; Audio pause silences it and counts its two minutes down on the button;
    acknowledged, it is silent. The bursts go to ``output`` here, which counts them."""
    from monitor.sounds import HIGH, SAMPLE_RATE, AlarmPlayer, burst

    played = []
    window.player = AlarmPlayer(output=lambda samples, rate: played.append((len(samples), rate)))
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    leak = {"kind": "extravasation", "priority": "high", "frame": 9, "plane": "lateral", "site": "posterior"}
    pump(qtbot, lambda: streams.result(9, alarms=[{**leak, "distance_mm": -1.0}]), lambda: played)
    assert played[0] == (len(burst(HIGH, with_interburst=False)), SAMPLE_RATE)
    qtbot.wait(1500)
    assert len(played) == 1  # the next burst is due 5 s after the first
    qtbot.mouseClick(window.audio, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.audio.text().startswith("AUDIO PAUSED 1:5"), timeout=2000)
    assert "ffd200" in window.audio.styleSheet()
    window.player.sound("high", time.monotonic() + 60)  # a minute on, the pause holds ...
    assert len(played) == 2  # (called directly: the player alone plays when due)
    qtbot.wait(1200)
    assert len(played) == 2  # ... and the window asks for none
    window._audio_paused_until = 0.0  # the two minutes are over
    qtbot.waitUntil(lambda: window.audio.text() == "Audio pause (2 min)", timeout=2000)
    streams.results.send(Status("t", "viewer", time.time(), "acknowledge", "1 alarm(s) acknowledged"))
    qtbot.waitUntil(lambda: window.banner.text() == "no alarm", timeout=5000)
    count = len(played)
    qtbot.wait(1200)
    assert len(played) == count  # acknowledged: silent


def test_a_viewer_without_a_sound_device_says_the_alarms_are_not_heard(qtbot, streams, window):
    """On this machine (no sound device) the view says so on the audio button and in its status
    line, never showing a silent 'audio on'; with a device, it offers the audio pause."""
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    if window.player.problem is None:
        assert window.audio.text() == "Audio pause (2 min)"
        return
    qtbot.waitUntil(lambda: window.audio.text() == "NO ALARM SOUND", timeout=2000)
    assert "ff9900" in window.audio.styleSheet()
    assert "not heard" in window.state.notices[0] and "sound" in window.state.notices[0]


def test_or_mode_is_legible_from_two_metres(qtbot, streams):
    """In OR mode the banner's capitals are at least 11.6 mm tall on a 24-inch 1080p screen (20
    arcmin at 2 m) and the readouts' at least 9.3 mm (16 arcmin, the least for critical text),
    as Qt measures the fonts; a long status line never widens the window past the screen."""
    from pyqtgraph.Qt import QtGui

    from monitor.viewer import SCREEN_24_1080_MM_PER_PX

    w = MonitorWindow(streams.endpoints.frames, streams.endpoints.results, None, or_mode=True)
    qtbot.addWidget(w)
    w.resize(1920, 1080)
    w.show()

    def cap_mm(widget) -> float:
        return QtGui.QFontMetrics(widget.font()).capHeight() * SCREEN_24_1080_MM_PER_PX

    assert cap_mm(w.banner) >= 11.6
    assert min(cap_mm(r) for r in w.readouts.values()) >= 9.3
    pump(qtbot, lambda: streams.frame(1), lambda: w.views["lateral"].shown_frame == 1)
    w.status_line.setText("viewer: " + "a very long notice " * 30)
    qtbot.wait(100)
    assert w.width() <= 1920


def test_one_proximity_condition_is_said_once_at_its_highest_priority(qtbot, streams, window):
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    alarms = [
        {"kind": "proximity", "priority": p, "frame": f, "plane": "lateral", "site": None, "distance_mm": 4.0}
        for p, f in (("medium", 7), ("high", 9))
    ]
    pump(
        qtbot,
        lambda: streams.result(9, alarms=alarms, distance_mm=4.0),
        lambda: "HIGH" in window.banner.text(),
    )
    assert window.banner.text() == "HIGH: cement 4.0 mm from the wall"


def test_alarms_coming_and_going_never_move_the_images(qtbot, streams, window):
    """The banner has a fixed height, one condition per line (none broken mid-phrase), and the
    audio button a fixed width: an alarm, its acknowledgement (a border) or an audio pause
    leaves the images where the operator's eyes are."""
    pump(qtbot, lambda: streams.frame(1), lambda: window.views["lateral"].shown_frame == 1)
    lateral = window.views["lateral"]

    def where():
        at = lateral.mapTo(window, QtCore.QPoint(0, 0))
        return at, lateral.size(), window.banner.height(), window.width()

    quiet = where()
    alarm = {"id": "L1/proximity/wall/high/3", "kind": "proximity", "priority": "high", "frame": 3}
    alarm |= {"plane": "lateral", "site": None, "distance_mm": -3.4}
    leak = {"id": "L1/extravasation/posterior/high/4", "kind": "extravasation", "priority": "high"}
    leak |= {"frame": 4, "plane": "lateral", "site": "posterior", "distance_mm": None}
    raised = [{"state": "raised", **a} for a in (alarm, leak)]
    pump(
        qtbot,
        lambda: streams.result(4, distance_mm=-3.4, alarm_changes=raised),
        lambda: "LEAK" in window.banner.text(),
    )
    assert window.banner.text() == "HIGH: LEAK (posterior) in lateral\nHIGH: cement 3.4 mm BEYOND the wall"
    assert where() == quiet
    qtbot.mouseClick(window.audio, QtCore.Qt.MouseButton.LeftButton)
    streams.results.send(Status("t", "viewer", time.time(), "acknowledge", "2 alarm(s) acknowledged"))
    qtbot.waitUntil(lambda: window.banner.text().startswith("ACKNOWLEDGED"), timeout=5000)
    assert where() == quiet


def test_training_confirms_each_stop_and_keeps_its_verdict(qtbot, streams):
    """In training a press is said on the STOP button at once, with the case's time, for
    stop_confirm_ms, and counted beside it; after the end the status line says the presses are
    being scored, and a verdict shown is not written over by the live view's polls."""
    w = MonitorWindow(streams.endpoints.frames, streams.endpoints.results, None, training=True, stale_s=0.5)
    qtbot.addWidget(w)
    w.stop_confirm_ms = 300
    w.show()
    pump(qtbot, lambda: streams.frame(23), lambda: w.views["lateral"].shown_frame == 23)
    qtbot.mouseClick(w.stop_button, QtCore.Qt.MouseButton.LeftButton)
    assert (w.stop_button.text(), w.stop_count.text()) == ("STOP recorded at 2.3 s", "1 STOP press recorded")
    qtbot.waitUntil(lambda: w.stop_button.text() == "STOP injecting", timeout=2000)
    qtbot.mouseClick(w.stop_button, QtCore.Qt.MouseButton.LeftButton)
    assert w.stop_count.text() == "2 STOP presses recorded" and w.stops[-1][1] == 23
    pump(
        qtbot,
        lambda: streams.results.send(End("t", "analyzer", time.time(), {"lateral": 24})),
        lambda: w.state.ended is not None,
    )
    assert "being scored" in w.status_line.text() and not w.banner.isVisible()
    w.show_training_result(["Case over, level L1:", "\u2022 Stopped 0.67 s after the monitor's alarm"])
    qtbot.wait(200)  # some 13 polls of the live view
    assert w.verdict_text.text().endswith("alarm") and w.verdict.isVisible() and not w.banner.isVisible()
    assert w.stop_count.text() == "2 STOP presses recorded" and not w.stop_button.isEnabled()


@pytest.mark.parametrize("or_mode", [False, True])
def test_every_word_of_the_banner_and_readouts_is_on_the_screen(qtbot, streams, or_mode):
    """A fixed-size banner or readout shrinks its text rather than cut it: with the wall not
    confirmed and two leaks standing, at the desk and in OR mode, the whole banner text fits
    its box and the alarms come first; each readout's text fits its label."""
    window = MonitorWindow(streams.endpoints.frames, streams.endpoints.results, None, or_mode=or_mode)
    qtbot.addWidget(window)
    window.resize(1920, 1080) if or_mode else window.resize(1400, 1000)
    window.show()
    unconfirmed = Caveat(CaveatCode.WALL_NOT_CONFIRMED, "WALL NOT CONFIRMED, the 5 mm rule is not armed")
    leaks = [
        {"id": f"L1/extravasation/{site}/high/{f}", "kind": "extravasation", "priority": "high", "frame": f}
        | {"plane": "lateral", "site": site, "distance_mm": None}
        for site, f in (("posterior", 4), ("venous", 5))
    ]
    pump(qtbot, lambda: streams.frame(5), lambda: window.views["lateral"].shown_frame == 5)
    pump(
        qtbot,
        lambda: streams.result(
            5,
            caveats=(unconfirmed,),
            checks=["leak"],
            alarm_changes=[{"state": "raised", **a} for a in leaks],
        ),
        lambda: "venous" in window.banner.text() and "WALL NOT CONFIRMED" in window.banner.text(),
    )
    qtbot.wait(100)
    banner = window.banner
    assert banner.text().startswith("HIGH: LEAK (venous)"), banner.text()
    box = banner.contentsRect()
    flags = int(QtCore.Qt.AlignmentFlag.AlignCenter) | int(QtCore.Qt.TextFlag.TextWordWrap)
    need = QtGui.QFontMetrics(banner.font()).boundingRect(
        QtCore.QRect(0, 0, box.width(), 10**5), flags, banner.text()
    )
    assert need.height() <= box.height() and need.width() <= box.width(), (
        need,
        box,
        banner.font().pointSize(),
    )
    for name, label in window.readouts.items():
        width = QtGui.QFontMetrics(label.font()).horizontalAdvance(label.text())
        assert width <= label.contentsRect().width(), (name, label.text(), width, label.contentsRect())


def test_the_volume_is_shown_with_its_interval_and_in_orange_when_from_the_shape(qtbot, streams, window):
    """The volume readout gives its 68 % interval; when the darkness read well under the
    cement's shape and the volume is the shape's (wide interval), it is orange: a figure the
    monitor cannot vouch for as it can for the darkness where the physics holds; likewise on a
    level that held cement when monitoring began."""

    live = streams.live

    pump(qtbot, lambda: streams.frame(6), lambda: window.views["lateral"].shown_frame == 6)
    pump(
        qtbot,
        lambda: live(6, volume_ml=0.9, volume_low_ml=0.87, volume_high_ml=0.94),
        lambda: "0.90" in window.readouts["volume"].text(),
    )
    assert window.readouts["volume"].text() == "VOLUME  0.90 mL (0.87-0.94)"
    assert "#ff9900" not in window.readouts["volume"].styleSheet()
    # the shape's volume, the darkness reading well under it or well over it (a denser cement,
    # less scatter than modelled), or a volume held where the images lost the cement
    doubts = (
        (CaveatCode.VOLUME_BELOW_SHAPE, "the volume read from the image's darkness (0.90 mL) is below"),
        (CaveatCode.VOLUME_ABOVE_SHAPE, "the volume read from the image's darkness (4.10 mL) is well above"),
        (CaveatCode.VOLUME_HELD, "the volume read now (0.04 mL) is under half the 2.68 mL read before"),
        (CaveatCode.VOLUME_ONE_VIEW, "the cement's shape is read from the lateral view alone"),
    )
    for k, (code, text) in enumerate(doubts):
        frame, caveat = 7 + 2 * k, Caveat(code, text)
        pump(
            qtbot,
            lambda f=frame, c=caveat: live(
                f, volume_ml=2.68, volume_low_ml=2.08, volume_high_ml=4.69, caveats=(c,)
            ),
            lambda: "2.68" in window.readouts["volume"].text(),
        )
        assert window.readouts["volume"].text() == "VOLUME  2.68 mL (2.08-4.69)"
        assert "#ff9900" in window.readouts["volume"].styleSheet(), code
        pump(
            qtbot,
            lambda f=frame: live(f + 1, volume_ml=2.7),
            lambda: "2.70" in window.readouts["volume"].text(),
        )
        assert window.readouts["volume"].text() == "VOLUME  2.70 mL"  # an analyzer that gives no interval
        assert "#ff9900" not in window.readouts["volume"].styleSheet()
    # monitoring began while cement was injected: what went in before may be left out
    late = Caveat(CaveatCode.CEMENT_IN_BASELINE, "cement grew over the first frames (about 34 mm2)")
    pump(
        qtbot,
        lambda: live(13, volume_ml=0.91, volume_low_ml=0.85, volume_high_ml=1.49, caveats=(late,)),
        lambda: "0.91" in window.readouts["volume"].text(),
    )
    assert "#ff9900" in window.readouts["volume"].styleSheet()
    # the other view's next result does not say it: the level's volume stays orange (it flickered)
    pump(
        qtbot,
        lambda: live(13, plane="ap", volume_ml=0.92, volume_low_ml=0.85, volume_high_ml=1.49),
        lambda: "0.92" in window.readouts["volume"].text(),
    )
    assert "#ff9900" in window.readouts["volume"].styleSheet()


def test_a_possible_leak_is_labelled_so_and_inside_the_image(qtbot, streams, window):
    """A leak off an outline whose wall is not confirmed is labelled POSSIBLE LEAK on the view,
    on the side of its box with room: beside a box in the image's right half the longer label
    ran off the view ("POSSIBLE LEAK venou")."""
    box = [SHAPE[1] - 40, 100, 20, 40]  # near the image's right edge
    leak = {
        "site": "venous",
        "centroid": [box[0] + 10.0, 120.0],
        "box": box,
        "volume_ml": 0.03,
        "possible": True,
    }
    overlay = {**OVERLAY, "leaks": [leak], "wall_state": "not-confirmed"}
    view = window.views["lateral"]
    pump(qtbot, lambda: streams.frame(5), lambda: view.shown_frame == 5)
    pump(
        qtbot,
        lambda: streams.result(5, overlay=overlay),
        lambda: bool(view.leak_labels) and view.leak_labels[0].isVisible(),
    )
    label = view.leak_labels[0]
    assert label.textItem.toPlainText() == "POSSIBLE LEAK venous"
    shown = label.mapRectToView(label.boundingRect())
    assert shown.left() >= 0 and shown.right() <= SHAPE[1], (shown.left(), shown.right())


def test_where_no_wall_is_found_the_view_says_so_and_that_the_leak_rules_are_off(qtbot, streams, window):
    """No body outline in the lateral view: the banner asks for the wall and says the 5 mm and
    leak rules are off there, or, while the view checks cement apart from the bolus, that leaks
    are seen only so; the distance readout says NO WALL FOUND (it said WALL NOT CONFIRMED, a
    wall the operator would then look for on the screen)."""
    none = Caveat(CaveatCode.NO_ANATOMY, "too few edge points")
    overlay = {k: v for k, v in OVERLAY.items() if k not in ("wall", "safety_line", "body", "front")}

    def send(checks):
        streams.frame(9)
        streams.result(9, caveats=(none,), checks=checks, overlay=overlay)

    pump(qtbot, lambda: send([]), lambda: window.banner.text().startswith("NO WALL FOUND"))
    assert window.banner.text() == (
        "NO WALL FOUND: 5 mm and leak rules OFF in lateral. Draw the posterior wall (Adjust wall)"
    )
    assert window.readouts["distance"].text() == "NO WALL FOUND"
    assert not window.confirm_button.isEnabled()
    pump(qtbot, lambda: send(["leak-apart"]), lambda: "apart" in window.banner.text())
    assert window.banner.text() == (
        "NO WALL FOUND: 5 mm rule OFF; lateral leaks only seen apart from the bolus."
        " Draw the posterior wall (Adjust wall)"
    )
    assert window.readouts["distance"].text() == "NO WALL FOUND"
