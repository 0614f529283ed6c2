"""The operator's live view (``monitor view``), in pyqtgraph on Qt.

What it shows follows from how it is used: the operator injects with both
hands busy and glances at the screen. So the alarm banner is large (high
priority red and flashing, medium yellow: IEC 60601-1-8), the readouts are
large, the wall, the 5 mm line and the cement are drawn in fixed colours, and a
stream that stops is shown as "NO SIGNAL" with its age over a greyed image,
never as a frozen image that looks live.

The window polls its subscriptions on a Qt timer, keeping only the newest
frame of each plane (a slow viewer falls behind alone: the source drops
frames for it, never for the analyzer). Operator actions go to the
analyzer's control endpoint, which applies them, logs them, and announces
them to every viewer.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from monitor.flow import FlowClient
from monitor.io.transport import VIEWER_HWM, CommandSender, Subscriber
from monitor.messages import LEVELS, PLANES, End, Heartbeat, Result, Status
from monitor.overlay import drawn_leaks, front_label, labelled_leaks, leak_name
from monitor.sounds import AlarmPlayer
from monitor.training import stop_confirmation, training_status
from monitor.viewstate import BANNER_LINES, ViewState, display_pixels
from monitor.vision.caveats import CaveatCode

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)

WALL, SAFETY, BODY, CEMENT, LEAK = "#e62828", "#ffd200", "#3cc83c", "#00c8ff", "#ff2828"
# Point sizes. The OR mode's are for reading at 2 m: text subtending 20 arcmin there has a cap
# height of 11.6 mm (ANSI/HFES 100 asks 16-24 arcmin for critical text); a 24-inch 1080p
# screen has 0.277 mm pixels, so 42 pixels. README "OR mode" has the cap heights as measured.
DESK_FONTS = {"banner": 22, "readout": 26, "buttons": 10, "title": 10, "axes": 9}
OR_FONTS = {"banner": 44, "readout": 36, "buttons": 18, "title": 16, "axes": 16}
SCREEN_24_1080_MM_PER_PX = 531.4 / 1920  # a 24-inch 16:9 panel is 531 mm wide
OR_BANNER_LINES = 2  # OR mode's banner: two lines of 44 pt, so that the images keep their size
AUDIO_TEXTS = ("Audio pause (2 min)", "AUDIO PAUSED 8:88", "NO ALARM SOUND")  # the audio button's
STOP_PT = 28  # training's STOP button
# training's verdict captions: the monitor's alarm, a stop in time, a stop late or never, neither
TONES = {"alarm": "#ffd200", "good": "#7ee081", "bad": "#ff7b7b", "neutral": "#e0e0e0"}
CONFIRM_TIP = "The dashed wall is the posterior wall: arm the 5 mm rule on it"
CONFIRM_REFUSED_TIP = (
    "The wall found cannot be confirmed (not seen in these images, or refuted by the first cement):"
    " draw the posterior wall with Adjust wall"
)
UNCONFIRMED = "#c080ff"  # the wall found, not trusted: the not-monitored banner's colour, lighter
# the Known cleft button, as the analyzer says the level is (checked: a cleft is known)
CLEFT_KNOWN = "Known cleft: YES"
CLEFT_NOT_KNOWN = "Known cleft: no"

BANNER = {
    "high": "background:#d62728; color:white;",
    "high-off": "background:#5a1010; color:white;",
    "medium": "background:#ffd200; color:black;",
    # acknowledged, the condition lasting: steady (no flashing, no sound), framed in its colour
    "high-acknowledged": "background:#3a0d0d; color:white; border:4px solid #d62728;",
    "medium-acknowledged": "background:#3a3000; color:white; border:4px solid #ffd200;",
    # frames go unchecked: not an alarm colour, but nothing like the calm "no alarm" either
    "not-monitored": "background:#6b2fa0; color:white;",
    "": "background:#202020; color:#9a9a9a;",
}


MIN_FIT_PT = 9  # the smallest a fitted text is drawn


def volume_text(volume_ml: float | None, interval_ml: tuple[float, float] | None) -> str:
    """The volume readout: "VOLUME  3.20 mL (2.95-3.48)", its 68 % interval in brackets."""
    if volume_ml is None:
        return "VOLUME  --"
    if interval_ml is None:
        return f"VOLUME  {volume_ml:.2f} mL"
    return f"VOLUME  {volume_ml:.2f} mL ({interval_ml[0]:.2f}-{interval_ml[1]:.2f})"


def fit_font(label: QtWidgets.QLabel, largest_pt: int, margin_px: int = 16) -> int:
    """Draw ``label``'s text at the largest bold size up to ``largest_pt`` that fits its box,
    wrapped if the label wraps: a fixed-size banner or readout must never hide part of what it
    says (an alarm cut off the banner is an alarm not shown). Returns the size used (points).
    Measured only when the text or the box changes."""
    box = label.contentsRect().adjusted(0, 0, -margin_px, -margin_px // 2)
    key = (label.text(), box.width(), box.height(), largest_pt)
    if getattr(label, "_fitted_for", None) == key:
        return label.font().pointSize()
    flags = int(QtCore.Qt.AlignmentFlag.AlignCenter)
    if label.wordWrap():
        flags |= int(QtCore.Qt.TextFlag.TextWordWrap)
    size = largest_pt
    while size > MIN_FIT_PT and box.width() > 0:
        font = QtGui.QFont("Sans", size, QtGui.QFont.Weight.Bold)
        need = QtGui.QFontMetrics(font).boundingRect(QtCore.QRect(0, 0, box.width(), 100_000), flags, key[0])
        if need.width() <= box.width() and need.height() <= box.height():
            break
        size -= 1
    if label.font().pointSize() != size:
        label.setFont(QtGui.QFont("Sans", size, QtGui.QFont.Weight.Bold))
    label._fitted_for = key
    return size


def _style(widget: QtWidgets.QWidget, sheet: str) -> None:
    """Set a style sheet only when it changes (re-styling costs a relayout)."""
    if widget.styleSheet() != sheet:
        widget.setStyleSheet(sheet)


class PlaneView(pg.GraphicsLayoutWidget):
    """One plane: the image, window/level by its histogram, and the overlay."""

    def __init__(self, plane: str):
        super().__init__()
        self.plane = plane
        self.box = self.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.box.disableAutoRange()  # the image sets the range; overlay items must not move it
        self.image = pg.ImageItem()
        self.box.addItem(self.image)
        self.levels = pg.HistogramLUTItem(image=self.image, orientation="horizontal")
        self.levels.setMaximumHeight(60)
        # The histogram is redrawn about once a second, not for every frame (it costs more than the image).
        self.image.sigImageChanged.disconnect(self.levels.imageChanged)
        self._histogram_at = 0.0
        self.nextRow()
        self.addItem(self.levels)
        self.body = pg.PlotCurveItem(pen=pg.mkPen(BODY, width=2))
        self.wall = pg.PlotCurveItem(pen=pg.mkPen(WALL, width=5))
        # a wall found but not trusted: dashed, in the not-monitored colour, until confirmed
        self.unconfirmed_pen = pg.mkPen(UNCONFIRMED, width=5, style=QtCore.Qt.PenStyle.DashLine)
        self.confirmed_pen = pg.mkPen(WALL, width=5)
        self.safety = pg.PlotCurveItem(pen=pg.mkPen(SAFETY, width=3, style=QtCore.Qt.PenStyle.DashLine))
        self.cement = pg.PlotCurveItem(pen=pg.mkPen(CEMENT, width=2), connect="pairs")
        self.front = pg.ScatterPlotItem(symbol="x", size=22, pen=pg.mkPen(WALL, width=3), brush=None)
        self.leaks = pg.ScatterPlotItem(symbol="s", size=34, pen=pg.mkPen(LEAK, width=3), brush=None)
        # the front read under the cannula's steel (cement pushed back along the needle's track)
        self.front_label = pg.TextItem("", color=WALL, anchor=(0, 0))
        self.front_label.setFont(QtGui.QFont("Sans", 12, QtGui.QFont.Weight.Bold))
        for item in (
            self.body,
            self.wall,
            self.safety,
            self.cement,
            self.front,
            self.leaks,
            self.front_label,
        ):
            self.box.addItem(item)
        self.leak_labels: list[pg.TextItem] = []
        # on a dark backdrop: white alone is lost on a bright AP image
        self.title = pg.TextItem(plane.upper(), color="w", anchor=(0, 0), fill=(0, 0, 0, 170))
        self.no_signal = pg.TextItem("", color=(255, 60, 60), anchor=(0.5, 0.5), fill=(0, 0, 0, 200))
        self.no_signal.setFont(QtGui.QFont("Sans", 28, QtGui.QFont.Weight.Bold))
        for item in (self.title, self.no_signal):
            item.setZValue(10)
            self.box.addItem(item)
        self.shape: tuple[int, int] | None = None
        self.photometric: str | None = None
        self.shown_frame: int | None = None
        self._size = (1, 1)  # the image shown, (width, height) pixels
        self.wall_editor: pg.LineSegmentROI | None = None
        self.body_editor: pg.RectROI | None = None
        self._overlay_shown: tuple = (None, None)

    def show_frame(self, pixels: np.ndarray, photometric: str, window, frame: int) -> None:
        shown = display_pixels(pixels)
        first = self.shape != pixels.shape
        self.image.setImage(shown, autoLevels=False)
        if first or photometric != self.photometric:
            self.shape, self.photometric = pixels.shape, photometric
            h, w = pixels.shape
            self.image.setRect(QtCore.QRectF(0, 0, w, h))  # overlay coordinates: full-resolution pixels
            lo, hi = window
            self.levels.setLevels(lo, hi)
            # Dense (dark) as on the C-arm: MONOCHROME1 stores dense as high values.
            lut = np.arange(256, dtype=np.uint8)
            self.image.setLookupTable(lut[::-1] if photometric == "MONOCHROME1" else lut)
            self.box.setRange(xRange=(0, w), yRange=(0, h), padding=0)
            self.title.setPos(w * 0.01, h * 0.01)
            self._size = (w, h)
        self.shown_frame = frame
        if time.monotonic() - self._histogram_at > 1.0:
            self._histogram_at = time.monotonic()
            self.levels.imageChanged(autoLevel=False)

    def show_title(self, overlay_frame: int | None) -> None:
        """The plane and the frame shown, and the overlay's frame while it is an older one: said
        until the shown frame's own result arrives, then no more (a note left standing would
        call a current overlay late)."""
        text = f"{self.plane.upper()}  frame {self.shown_frame}"
        if overlay_frame is not None and overlay_frame != self.shown_frame:
            text += f"  (overlay of frame {overlay_frame})"
        if self.title.textItem.toPlainText() != text:
            self.title.setText(text)

    def show_overlay(self, r: Result | None, visible: bool = True) -> None:
        if (id(r), visible) == self._overlay_shown:
            return  # nothing new to draw
        self._overlay_shown = (id(r), visible)
        o = (r.overlay if r else {}) if visible else {}
        _polyline(self.body, o.get("body"), closed=True)
        unconfirmed = o.get("wall_state") == "not-confirmed"
        self.wall.setPen(self.unconfirmed_pen if unconfirmed else self.confirmed_pen)
        _polyline(self.wall, o.get("wall"))
        _polyline(self.safety, None if unconfirmed else o.get("safety_line"))  # no rule, no line
        segments = []
        for contour in o.get("cement", []):
            pts = np.asarray(contour, float)
            closed = np.vstack([pts, pts[:1]])
            segments.append(np.repeat(closed, 2, axis=0)[1:-1])
        if segments:
            xy = np.vstack(segments)
            self.cement.setData(xy[:, 0], xy[:, 1])
        else:
            self.cement.setData([], [])
        front = o.get("front")
        self.front.setData(*([[front[0]], [front[1]]] if front else [[], []]))
        self.front_label.setText(front_label(o, r.distance_mm if r else None) if front else "")
        if front:
            self.front_label.setPos(front[0] + 8, front[1] + 8)
        leaks = drawn_leaks(o.get("leaks", []))
        self.leaks.setData(
            [lk["box"][0] + lk["box"][2] / 2 for lk in leaks],
            [lk["box"][1] + lk["box"][3] / 2 for lk in leaks],
        )
        named = labelled_leaks(leaks)
        while len(self.leak_labels) < len(named):
            label = pg.TextItem("", color=LEAK, anchor=(0, 1))
            label.setFont(QtGui.QFont("Sans", 14, QtGui.QFont.Weight.Bold))
            self.box.addItem(label)
            self.leak_labels.append(label)
        for i, label in enumerate(self.leak_labels):
            if i < len(named):
                x, y, w, _ = named[i]["box"]
                label.setText(f"{leak_name(named[i].get('possible', False))} {named[i]['site']}")
                # beside the box, on the side with room: a label past the image's right half ran
                # off the view ("POSSIBLE LEAK venou")
                right_half = self.image.width() is not None and x + w / 2 > self.image.width() / 2
                label.setAnchor((1, 1) if right_half else (0, 1))
                label.setPos(x - 6 if right_half else x + w + 6, y)
                label.show()
            else:
                label.hide()

    def show_stale(self, age: float | None, ended: str | None = None, held: bool = False) -> None:
        """NO SIGNAL with its age over a greyed image; IMAGE HELD over a greyed image while the
        analysis skips its frames as no new exposure (``held``); or the end of the recording over
        the last image, kept as it was. The label is hidden while live: its dark backdrop would
        otherwise sit at the image centre, where the cement is."""
        held = held and age is None and not ended
        if held:
            text = "IMAGE HELD\nno new X-ray"
        else:
            text = f"NO SIGNAL\n{age:.1f} s" if age is not None else (ended or "")
        self.no_signal.setText(text)
        self.no_signal.setVisible(bool(text))
        w, h = self._size
        if age is None and ended:  # at the bottom edge: the cement and the wall stay in sight
            self.no_signal.setAnchor((0.5, 1.0))
            self.no_signal.setPos(w / 2, h * 0.99)
        else:
            self.no_signal.setAnchor((0.5, 0.5))
            self.no_signal.setPos(w / 2, h / 2)
        self.image.setOpacity(0.35 if age is not None or held else 1.0)


def _polyline(item: pg.PlotCurveItem, points, closed: bool = False) -> None:
    if not points:
        item.setData([], [])
        return
    pts = np.asarray(points, float)
    if closed:
        pts = np.vstack([pts, pts[:1]])
    item.setData(pts[:, 0], pts[:, 1])


class MonitorWindow(QtWidgets.QWidget):
    """The live monitor. ``training``: measurements and alarms hidden, a STOP button instead."""

    def __init__(
        self,
        frames_endpoint: str,
        results_endpoint: str,
        control_endpoint: str | None,
        training: bool = False,
        stale_s: float = 1.0,
        or_mode: bool = False,
        flow_endpoint: str | None = None,
    ):
        """``flow_endpoint``: the source's, to say when this view is subscribed, so that a run
        that waits for it (``PaceOptions.ready_for``) shows the baseline from its first frame."""
        super().__init__()
        self.setWindowTitle("Vertebroplasty cement monitor" + (" - TRAINING" if training else ""))
        self.training = training
        self.or_mode = or_mode  # the operating room: full screen, legible from 2 m (see OR_FONTS)
        self.state = ViewState(stale_s=stale_s)
        self.frames = Subscriber(frames_endpoint, hwm=VIEWER_HWM, key="viewer")
        self.results = Subscriber(results_endpoint, hwm=256, role="results", key="viewer")
        self.commands = CommandSender(control_endpoint, "viewer") if control_endpoint else None
        self.flow = FlowClient(flow_endpoint, "viewer") if flow_endpoint else None
        self.seen_frame = False  # "ready" is said until the first frame arrives
        self.stops: list[tuple[float, int | None]] = []  # training: (time, lateral frame shown)
        self.rendered = 0  # frames put on screen, for the frame-rate benchmark
        # the IEC 60601-1-8 bursts on the sound device; said on screen when there is none
        self.player = AlarmPlayer()
        if self.player.problem and not training:
            self.state.notices.append(f"viewer: {self.player.problem}: alarms are shown, not heard")
        self._build()
        self._flash = False
        self._audio_paused_until = 0.0
        self._timelines_at = 0.0
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.poll)
        self.timer.start(15)
        self.flasher = QtCore.QTimer(self)
        self.flasher.timeout.connect(self._toggle_flash)
        self.flasher.start(500)  # high priority flashes at about 2 Hz

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        """The window's widgets and layout: the alarm banner with its buttons, the two planes' views,
        the readouts, the distance and volume plots, the operator's controls and status line, and the
        STOP button (shown in training mode only, where most of the rest is hidden)."""
        # Over 60 lines on purpose: Qt layout, one row of widgets after another in the order they appear
        # on the screen, then which of them training mode hides.
        layout = QtWidgets.QVBoxLayout(self)
        top = QtWidgets.QHBoxLayout()
        self.banner = QtWidgets.QLabel("")
        sizes = self.fonts = OR_FONTS if self.or_mode else DESK_FONTS
        banner_font = QtGui.QFont("Sans", sizes["banner"], QtGui.QFont.Weight.Bold)
        self.banner.setFont(banner_font)
        # A fixed height of BANNER_LINES lines (and the acknowledged state's border): an alarm
        # that comes, wraps or goes never moves the images under the operator's eyes.
        self.banner_lines = OR_BANNER_LINES if self.or_mode else BANNER_LINES
        lines = QtGui.QFontMetrics(banner_font).lineSpacing() * self.banner_lines
        self.banner.setFixedHeight(lines + 16)
        self.banner.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.banner.setWordWrap(True)
        self.banner.setSizePolicy(
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        self.ack = QtWidgets.QPushButton("Acknowledge")
        self.ack.clicked.connect(lambda: self.send("acknowledge"))
        self.audio = QtWidgets.QPushButton("Audio pause (2 min)")
        self.audio.clicked.connect(self.pause_audio)
        for b in (self.ack, self.audio):
            b.setMinimumHeight(64)
        # as wide as its widest text ("AUDIO PAUSED 1:59", bold), so a pause does not move the banner
        bold = QtGui.QFont("Sans", sizes["buttons"], QtGui.QFont.Weight.Bold)
        widest = max(QtGui.QFontMetrics(bold).horizontalAdvance(t) for t in AUDIO_TEXTS)
        self.audio.setFixedWidth(widest + 48)
        top.addWidget(self.banner, 1)
        top.addWidget(self.ack)
        top.addWidget(self.audio)
        layout.addLayout(top)
        views = QtWidgets.QHBoxLayout()
        self.views = {p: PlaneView(p) for p in PLANES}
        for v in self.views.values():
            views.addWidget(v, 1)
        layout.addLayout(views, 5)
        readouts = QtWidgets.QHBoxLayout()
        self.readouts = {}
        for key in ("level", "distance", "to_line", "volume"):
            label = QtWidgets.QLabel("")
            label.setFont(QtGui.QFont("Sans", sizes["readout"], QtGui.QFont.Weight.Bold))
            label.setStyleSheet("color:#f0f0f0; background:#181818; padding:6px;")
            # a longer reading ("BEYOND THE WALL") never widens the window, moving the images
            label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
            # its height that of the largest text: a text drawn smaller to fit never moves the images
            label.setFixedHeight(QtGui.QFontMetrics(label.font()).lineSpacing() + 16)
            readouts.addWidget(label, 1)
            self.readouts[key] = label
        layout.addLayout(readouts)
        plots = QtWidgets.QHBoxLayout()
        self.distance_plot = pg.PlotWidget(title="distance to posterior wall (mm)")
        self.distance_plot.addItem(
            pg.InfiniteLine(5.0, angle=0, pen=pg.mkPen(WALL, width=2, style=QtCore.Qt.PenStyle.DashLine))
        )
        self.distance_curve = self.distance_plot.plot(pen=pg.mkPen(CEMENT, width=2))
        self.volume_plot = pg.PlotWidget(title="cement volume (mL)")
        self.volume_curve = self.volume_plot.plot(pen=pg.mkPen(CEMENT, width=2))
        axis_font = QtGui.QFont("Sans", sizes["axes"])
        for p in (self.distance_plot, self.volume_plot):
            p.setMaximumHeight(170 if not self.or_mode else 210)
            p.setTitle(p.plotItem.titleLabel.text, size=f"{sizes['axes'] + 2}pt")
            for side in ("left", "bottom"):  # tick labels as legible as the rest in OR mode
                p.getAxis(side).setStyle(tickFont=axis_font)
            plots.addWidget(p, 1)
        layout.addLayout(plots)
        controls = QtWidgets.QHBoxLayout()
        self.level_box = QtWidgets.QComboBox()
        self.level_box.setEditable(True)
        self.level_box.addItems(LEVELS)
        self.level_box.setMinimumWidth(QtGui.QFontMetrics(self.level_box.font()).horizontalAdvance("T12") * 3)
        set_level = QtWidgets.QPushButton("Start level")
        set_level.clicked.connect(lambda: self.send("level", self.level_box.currentText().strip().upper()))
        syringe = self.syringe_button = QtWidgets.QPushButton("1 mL delivered")
        syringe.clicked.connect(lambda: self.send("syringe", 1.0))
        self.pause_button = QtWidgets.QPushButton("Injection paused")
        self.pause_button.clicked.connect(lambda: self.send("resume" if self.state.paused else "pause"))
        self.wall_button = QtWidgets.QPushButton("Adjust wall")
        self.wall_button.setCheckable(True)
        self.wall_button.toggled.connect(self.edit_wall)
        self.confirm_button = QtWidgets.QPushButton("Confirm wall")
        self.confirm_button.setToolTip(CONFIRM_TIP)
        self.confirm_button.clicked.connect(lambda: self.send("confirm-wall"))
        self.cleft_button = QtWidgets.QPushButton(CLEFT_NOT_KNOWN)
        self.cleft_button.setCheckable(True)
        self.cleft_button.setToolTip(
            "This level has an intravertebral cleft seen on the images before the procedure: cement above"
            " or below the bolus where no body outline is armed is then only a possible disc leak"
        )
        self.cleft_button.clicked.connect(self._send_cleft)
        self.body_button = QtWidgets.QPushButton("Adjust body")
        self.body_button.setCheckable(True)
        self.body_button.toggled.connect(self.edit_body)
        self.status_line = QtWidgets.QLabel("waiting for frames ...")
        self.status_line.setSizePolicy(  # a long line is cut at the window's edge, never widens it
            QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred
        )
        buttons = (self.pause_button, self.confirm_button, self.wall_button, self.body_button)
        buttons += (self.cleft_button,)
        for w in (self.level_box, set_level, syringe, *buttons):
            controls.addWidget(w)
        controls.addWidget(self.status_line, 1)
        layout.addLayout(controls)
        controls_font = f"padding:6px 14px; font-size:{sizes['buttons']}pt;"
        buttons = f"QPushButton, QComboBox, QLabel#status {{ {controls_font} }}"
        self.status_line.setObjectName("status")
        # a button held down (a mode, or the level's known cleft) must look it: amber, as said
        checked = "QPushButton:checked { background:#5a4400; color:#ffd200; border:2px solid #ffd200; }"
        # ... and one that does nothing now must look it: greyed (the widgets' light text hid it)
        disabled = "QPushButton:disabled { color:#5a5a5a; }"
        self.setStyleSheet("QWidget { background:#101010; color:#e0e0e0; } " + buttons + checked + disabled)
        for view in self.views.values():
            view.title.setFont(QtGui.QFont("Sans", sizes["title"], QtGui.QFont.Weight.Bold))
            view.levels.axis.setStyle(tickFont=axis_font)
        self._build_training(layout, views)
        training_hidden = [self.banner, self.ack, self.audio, self.distance_plot, self.volume_plot]
        training_hidden += [*self.readouts.values(), self.wall_button, self.body_button, set_level, syringe]
        training_hidden += [self.confirm_button, self.level_box, self.pause_button, self.cleft_button]
        for w in training_hidden:
            w.setVisible(not self.training)
        for w in (self.stop_button, self.stop_count):
            w.setVisible(self.training)
        self.verdict.setVisible(False)  # until the case is scored

    def _build_training(self, layout: QtWidgets.QVBoxLayout, views: QtWidgets.QHBoxLayout) -> None:
        """Training mode's own widgets: the STOP button with the count of presses beside it, and the
        verdict that replaces the two planes' views once the case is scored: its lines, then the
        lateral frame where the monitor alarmed beside the one where the trainee stopped, captioned.
        Sizes are fixed (the training view is a desk's), the STOP text in its own style sheet so that
        the window's button size does not shrink it."""
        self.stop_button = QtWidgets.QPushButton("STOP injecting")
        self.stop_button.setMinimumHeight(90)
        self.stop_button.clicked.connect(self.stop_pressed)
        self.stop_count = QtWidgets.QLabel("no STOP pressed yet")
        self.stop_count.setFont(QtGui.QFont("Sans", 16, QtGui.QFont.Weight.Bold))
        self.stop_count.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.stop_confirm_ms = 2500  # how long the button says a press was recorded
        self._stop_said = QtCore.QTimer(self)
        self._stop_said.setSingleShot(True)
        self._stop_said.timeout.connect(self._stop_ready)
        self._stop_ready()
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.stop_button, 3)
        row.addWidget(self.stop_count, 1)
        layout.addLayout(row)
        self.verdict = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(self.verdict)
        self.verdict_text = QtWidgets.QLabel("")
        self.verdict_text.setFont(QtGui.QFont("Sans", 17, QtGui.QFont.Weight.Bold))
        self.verdict_text.setWordWrap(True)
        self.verdict_text.setStyleSheet("background:#1f3d66; color:white; padding:10px;")
        column.addWidget(self.verdict_text)
        pictures = QtWidgets.QGridLayout()  # captions in one row: the two pictures stay level
        self.key_views: list[tuple[QtWidgets.QLabel, pg.GraphicsLayoutWidget, pg.ImageItem]] = []
        for i in range(2):  # the monitor's frame, the trainee's
            caption = QtWidgets.QLabel("")
            caption.setFont(QtGui.QFont("Sans", 16, QtGui.QFont.Weight.Bold))
            caption.setWordWrap(True)
            caption.setAlignment(QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignTop)
            picture = pg.GraphicsLayoutWidget()
            box = picture.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
            box.setMouseEnabled(False, False)
            image = pg.ImageItem()
            box.addItem(image)
            pictures.addWidget(caption, 0, i)
            pictures.addWidget(picture, 1, i)
            pictures.setColumnStretch(i, 1)
            self.key_views.append((caption, picture, image))
        pictures.setRowStretch(1, 1)
        column.addLayout(pictures, 1)
        views.addWidget(self.verdict, 1)  # in the planes' row: it takes their place

    # ------------------------------------------------------------------ actions

    def _send_cleft(self, checked: bool) -> None:
        if self.send("cleft", bool(checked)):
            self.state.cleft_sent(bool(checked), time.monotonic())

    def send(self, action: str, value=None) -> bool:
        """Send the operator's ``action`` to the analyzer; whether it went (it says so if not)."""
        if self.commands is None:
            self.status_line.setText("no analyzer control endpoint: actions are not sent")
            return False
        if not self.analyzer_listening():
            # never a silent loss: no analyzer is there to carry it out and log it
            heard = self.results.stats.last_message_at is not None
            why = "the analyzer has stopped" if heard else "no analyzer has been heard"
            line = f"{action.upper()} NOT DELIVERED: {why}; it is not logged"
            if self.state.ended:
                self.state.said_after_end = line
            else:
                self.state.notices.append(f"viewer: {line}")
            return False
        try:
            self.commands.send(action, value)
        except OSError as e:
            self.status_line.setText(str(e))
            return False
        return True

    def analyzer_listening(self, within_s: float = 3.0) -> bool:
        """Whether the analyzer was heard lately (its results' heartbeats come every second,
        and go on after the end while it takes commands for this view)."""
        heard = self.results.stats.last_message_at
        return heard is not None and time.monotonic() - heard < within_s

    def pause_audio(self) -> None:
        self._audio_paused_until = time.monotonic() + 120.0

    def stop_pressed(self) -> None:
        """Training: record the press (the lateral frame shown) and say so at once, on the button
        for ``stop_confirm_ms`` and in the count beside it."""
        lateral = self.state.planes["lateral"]
        if self.views["lateral"].shown_frame is None:  # nothing seen yet: not a decision to score
            self.stop_count.setText("no image yet: STOP not recorded")
            return
        self.stops.append((time.monotonic(), self.views["lateral"].shown_frame))
        said, count = stop_confirmation(
            len(self.stops), lateral.acq_time if lateral.pixels is not None else None
        )
        self.stop_button.setText(said)
        self.stop_button.setStyleSheet(
            f"background:#1d7a3a; color:white; font-size:{STOP_PT}pt; font-weight:bold;"
        )
        self.stop_count.setText(count)
        self._stop_said.start(self.stop_confirm_ms)

    def _stop_ready(self) -> None:
        self.stop_button.setText("STOP injecting")
        self.stop_button.setStyleSheet(
            f"background:#d62728; color:white; font-size:{STOP_PT}pt; font-weight:bold;"
        )

    def show_training_result(self, lines: list[str], key_frames=()) -> None:
        """The end of a training case: how the trainee's stops compare with the monitor, in place of
        the live views, and nothing live draws over it. ``key_frames``: monitor.training.KeyFrame
        (caption, tone, RGB image or None), the monitor's then the trainee's."""
        self._stop_said.stop()
        self.stop_button.setEnabled(False)
        self.stop_button.setText("case over")
        self.stop_button.setStyleSheet(f"background:#3a3a3a; color:#bdbdbd; font-size:{STOP_PT}pt;")
        if not self.stops:
            self.stop_count.setText("STOP never pressed")
        for view in self.views.values():
            view.setVisible(False)
        self.status_line.setVisible(False)
        self.verdict_text.setText("\n".join(lines))
        for i, (caption, picture, image) in enumerate(self.key_views):
            key = key_frames[i] if i < len(key_frames) else None
            caption.setText(key.caption if key else "")
            caption.setStyleSheet(f"color:{TONES[key.tone if key else 'neutral']}; padding:6px;")
            if key is not None and key.image is not None:
                h, w = key.image.shape[:2]
                image.setImage(key.image, autoLevels=False, levels=(0, 255))
                image.setRect(QtCore.QRectF(0, 0, w, h))
                image.getViewBox().setRange(xRange=(0, w), yRange=(0, h), padding=0)
            picture.setVisible(key is not None and key.image is not None)
            caption.setVisible(key is not None)
        self.verdict.setVisible(True)

    def edit_wall(self, on: bool) -> None:
        view = self.views["lateral"]
        if not on:
            if view.wall_editor is not None:
                view.box.removeItem(view.wall_editor)
                view.wall_editor = None
            return
        r = self.state.planes["lateral"].result
        # a wall found that cannot be confirmed is not offered as a start either: a nudge to it
        # would arm the rule on the very wall the analyzer refuses
        offered = r.overlay.get("wall") if r and self.state.wall_confirmable() else None
        ends = offered or _default_wall(view.shape)
        editor = pg.LineSegmentROI(ends, pen=pg.mkPen("#ff66ff", width=4))
        editor.sigRegionChangeFinished.connect(lambda roi: self.send("wall", _roi_points(roi)))
        view.box.addItem(editor)
        view.wall_editor = editor

    def edit_body(self, on: bool) -> None:
        """A box on each view over the body found (or the middle of the image), sent as
        the operator's body whenever it has been moved or resized."""
        for plane, view in self.views.items():
            if view.body_editor is not None:
                view.box.removeItem(view.body_editor)
                view.body_editor = None
            if not on:
                continue
            r = self.state.planes[plane].result
            corners = np.asarray((r.overlay.get("body") if r else None) or _default_body(view.shape), float)
            (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
            editor = pg.RectROI((x0, y0), (x1 - x0, y1 - y0), pen=pg.mkPen("#ff66ff", width=3))
            editor.sigRegionChangeFinished.connect(
                lambda roi, plane=plane: self.send("body", {"plane": plane, "box": _roi_box(roi)})
            )
            view.box.addItem(editor)
            view.body_editor = editor

    # ------------------------------------------------------------------ updates

    def poll(self) -> None:
        now = time.monotonic()
        newest = self.frames.latest(0)
        self._say_ready(bool(newest))
        for plane, frame in newest.items():
            if frame.header.resent:
                continue
            h = frame.header
            self.state.frame(plane, np.asarray(frame.pixels), h.frame, h.photometric, now, h.acq_time)
        message = self.results.receive(0)
        while message is not None:
            if isinstance(message, Result):
                self.state.result(message, now)
            elif isinstance(message, Status):
                self.state.status(message)
            elif isinstance(message, End):  # the analyzer's, once it has analysed all that was sent
                self.state.end(message.reason)
            elif isinstance(message, Heartbeat) and message.standing_alarms is not None:
                self.state.standing(message.standing_alarms)  # no frames coming, or after the end
            message = self.results.receive(0)
        self.refresh(now)

    def _say_ready(self, frame_arrived: bool) -> None:
        """Tell the source this view is subscribed, once it has heard both the source (its
        heartbeats) and the analyzer (its results' heartbeats): before that, a frame or a
        result published would be lost to it. Repeated until a frame arrives, as the analyzer
        does: a "ready" sent while the flow socket still connects may be dropped."""
        self.seen_frame = self.seen_frame or frame_arrived
        if self.flow is None or self.seen_frame:
            return
        if self.frames.stats.last_message_at is not None and self.results.stats.last_message_at is not None:
            self.flow.ready()

    def refresh(self, now: float) -> None:
        s = self.state
        stale = s.stale_for(now)
        for plane, view in self.views.items():
            p = s.planes[plane]
            if p.pixels is not None and p.frame != view.shown_frame:
                view.show_frame(p.pixels, p.photometric, p.window, p.frame)
                self.rendered += 1
            # A stale overlay would be a frozen picture that looks live: only NO SIGNAL is drawn,
            # over both views, or over the one whose frames stopped while the other's go on
            silent = stale if stale is not None else s.view_silent_for(plane, now)
            view.show_overlay(p.result, visible=not self.training and silent is None)
            if view.shown_frame is not None:  # training draws no overlay, so names none
                overlay_frame = p.result.frame if p.result is not None and not self.training else None
                view.show_title(overlay_frame)
            view.show_stale(silent, s.ended, s.view_held(plane))
        self._readouts(stale is not None)
        self._banner()
        self.pause_button.setText("Resume injection" if s.paused else "Injection paused")
        known = s.shown_cleft(time.monotonic())  # as the analyzer said, or as just sent
        self.cleft_button.setChecked(known)  # (clicked is not emitted)
        self.cleft_button.setText(CLEFT_KNOWN if known else CLEFT_NOT_KNOWN)
        if self.training:  # no overlay, no analysis to speak of: where the case is, or that it is over
            self.status_line.setText(training_status(s.ended, stale, s.planes["lateral"]))
            if s.ended and self.stop_button.isEnabled():  # the case is over: every press counted is scored
                self._stop_said.stop()
                self.stop_button.setEnabled(False)
                self.stop_button.setText("case over: scoring")
        elif s.ended:
            ended = f"{s.ended}: the last images and overlay stay shown"
            self.status_line.setText(f"{s.said_after_end}  |  {ended}" if s.said_after_end else ended)
        elif stale is not None:
            self.status_line.setText(f"NO SIGNAL: no frame for {stale:.1f} s")
        elif s.analysis_silent(now):
            self.status_line.setText("NO ANALYSIS: frames arrive but the analyzer does not answer")
        elif (lag := s.analysis_lag_s()) is not None and lag > 0.5:
            self.status_line.setText(
                f"ANALYSIS {lag:.1f} s BEHIND THE IMAGE: the overlay is older than the frame"
            )
        elif s.notices:
            self.status_line.setText(s.notices[-1])
        else:
            shown = ", ".join(
                f"{p} frame {v.shown_frame}" for p, v in self.views.items() if v.shown_frame is not None
            )
            self.status_line.setText(f"live: {shown}" if shown else "waiting for frames ...")
        if s.level and self.level_box.currentText() != s.level and not self.level_box.hasFocus():
            self.level_box.setCurrentText(s.level)
        if not self.training and now - self._timelines_at > 0.2:
            self._timelines_at = now
            for curve, series in ((self.distance_curve, s.distances), (self.volume_curve, s.volumes)):
                if series:
                    xy = np.asarray(series)
                    curve.setData(xy[:, 0], xy[:, 1])

    def _readouts(self, stale: bool = False) -> None:
        """Large numbers; grey while the stream is stale (they are the last known values)."""
        s = self.state
        r = self.readouts
        r["level"].setText(f"LEVEL {s.level or '?'}")
        d = s.distance_mm
        lateral = s.planes["lateral"].result
        uncalibrated = lateral is not None and CaveatCode.UNCALIBRATED in lateral.caveat_codes()
        unarmed = s.wall_prompt() is not None
        confirmable = s.wall_confirmable()  # not a wall refuted or not seen: that one is drawn
        self.confirm_button.setEnabled(
            confirmable and lateral is not None and CaveatCode.WALL_NOT_CONFIRMED in lateral.caveat_codes()
        )
        self.confirm_button.setToolTip(CONFIRM_TIP if confirmable else CONFIRM_REFUSED_TIP)
        codes = lateral.caveat_codes() if lateral is not None else frozenset()
        none_found = CaveatCode.NO_ANATOMY in codes and CaveatCode.WALL_NOT_CONFIRMED not in codes
        r["distance"].setText(
            "UNCALIBRATED: no mm"
            if uncalibrated
            else "NO WALL FOUND"
            if unarmed and none_found
            else "WALL NOT CONFIRMED"
            if unarmed
            else "WALL  --"
            if d is None
            else f"WALL  {d:+.1f} mm"
        )
        colour = "#f0f0f0" if d is None or d >= 7 else ("#ffd200" if d > 5 else "#ff4040")
        colour = "#ff9900" if uncalibrated else UNCONFIRMED if unarmed else colour
        colour = "#6a6a6a" if stale else colour
        # a volume the monitor cannot vouch for (the shape's, the darkness having read low, or
        # the darkness with no shape to check it by), with a wide interval (said by the result
        # the volume shown came with)
        low = s.volume_doubtful
        for key in ("level", "to_line", "volume"):
            _style(r[key], f"color:{'#6a6a6a' if stale else '#f0f0f0'}; background:#181818; padding:6px;")
        if low and not stale:  # orange, as what the monitor cannot vouch for
            _style(r["volume"], "color:#ff9900; background:#181818; padding:6px;")
        _style(r["distance"], f"color:{colour}; background:#181818; padding:6px;")
        if d is not None and d < 0:  # past the wall: not merely inside the 5 mm line
            r["to_line"].setText("BEYOND THE WALL")
        elif d is not None and d <= 5:
            r["to_line"].setText("INSIDE 5 mm LINE")
        elif s.seconds_to_line is None:
            r["to_line"].setText("5 mm LINE  --")
        else:
            r["to_line"].setText(f"5 mm LINE in {s.seconds_to_line:.1f} s")
        r["volume"].setText(volume_text(s.volume_ml, s.volume_interval_ml))
        for label in r.values():  # smaller rather than cut ("WALL NOT CONF")
            fit_font(label, self.fonts["readout"], margin_px=20)

    def _banner(self) -> None:
        if self.training:  # the trainee decides without the alarms: the banner stays hidden
            return
        priority, text = self.state.banner(self.banner_lines)
        style = "high-off" if priority == "high" and not self._flash else priority
        _style(self.banner, BANNER[style])
        self.banner.setText(text or "no alarm")
        fit_font(self.banner, self.fonts["banner"])
        left = self._audio_paused_until - time.monotonic()
        if self.player.problem:  # never a silent "audio on": the operator must know
            self.audio.setText("NO ALARM SOUND")
            _style(self.audio, "background:#ff9900; color:black; font-weight:bold;")
        elif left > 0:
            self.audio.setText(f"AUDIO PAUSED {int(left) // 60}:{int(left) % 60:02d}")
            _style(self.audio, "background:#ffd200; color:black; font-weight:bold;")
        else:
            self.audio.setText("Audio pause (2 min)")
            _style(self.audio, "")

    def _toggle_flash(self) -> None:
        self._flash = not self._flash
        now = time.monotonic()
        silent = self.training or self.state.ended or now < self._audio_paused_until
        self.player.sound(None if silent else self.state.sounding(), now)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.timer.stop()
        self.player.sound(None, time.monotonic())
        self.flasher.stop()
        self.frames.close()
        self.results.close()
        if self.commands is not None:
            self.commands.close()
        if self.flow is not None:
            self.flow.close()
        super().closeEvent(event)


def _default_wall(shape) -> list[list[float]]:
    h, w = shape or (512, 512)
    return [[w * 0.6, h * 0.4], [w * 0.6, h * 0.6]]


def _default_body(shape) -> list[list[float]]:
    h, w = shape or (512, 512)
    return [[w * 0.35, h * 0.35], [w * 0.65, h * 0.65]]


def _roi_box(roi: pg.RectROI) -> list[float]:
    """The rectangle as x, y, width, height in image pixels."""
    (x, y), (w, h) = roi.pos(), roi.size()
    return [round(float(x), 1), round(float(y), 1), round(float(w), 1), round(float(h), 1)]


def _roi_points(roi: pg.LineSegmentROI) -> list[list[float]]:
    """The segment's two handles in image (scene -> view box) coordinates."""
    points = []
    for handle in roi.getHandles():
        p = roi.mapToParent(handle.pos())
        points.append([round(p.x(), 1), round(p.y(), 1)])
    return points


def has_display() -> bool:
    """A screen to show a window on (offscreen Qt counts as none)."""
    import os

    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform == "offscreen":
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or platform)


def viewer_problem(timeout_s: float = 30.0) -> str | None:
    """Why a window cannot be opened here (Qt cannot load its platform plugin: missing
    libraries, no X server), in one line; None when it can. Tried in a child process: Qt
    aborts the process it fails in."""
    import subprocess
    import sys

    probe = "import sys; from PySide6.QtWidgets import QApplication; QApplication(sys.argv[:1])"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return f"the viewer cannot open a window here: Qt did not start within {timeout_s:g} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    said = next((line for line in lines if "platform plugin" in line), lines[-1] if lines else "")
    return (
        f"the viewer cannot open a window here ({said or f'exit {done.returncode}'}); install the Qt"
        " libraries (scripts/setup does, as root), or give --headless"
    )


def run_viewer(
    frames_endpoint: str,
    results_endpoint: str,
    control_endpoint: str | None,
    screenshot: str | None = None,
    after_s: float = 5.0,
    or_mode: bool = False,
    flow_endpoint: str | None = None,
    close_on_interrupt: bool = True,
) -> int:
    """Show the monitor until the window is closed; with ``screenshot``, grab the
    window to that PNG after ``after_s`` seconds and quit. ``or_mode``: full screen, with
    the operating room's type sizes (OR_FONTS). ``flow_endpoint``: the source's, when the run
    waits for this view before its first frame. ``close_on_interrupt``: Ctrl-C closes the window
    (``monitor view``); else it is ignored (a run that started this view decides)."""
    app = pg.mkQApp("Vertebroplasty monitor")
    window = MonitorWindow(
        frames_endpoint, results_endpoint, control_endpoint, or_mode=or_mode, flow_endpoint=flow_endpoint
    )

    # Asked to stop by the system (a logout, the run's supervisor): close as the operator
    # would, so the run ends cleanly. Python runs the handler on the window's 15 ms timer.
    def close(*_):
        QtCore.QTimer.singleShot(0, window.close)

    signal.signal(signal.SIGTERM, close)
    # Ctrl-C: closed, not a traceback; ignored when a run that started this view decides
    signal.signal(signal.SIGINT, close if close_on_interrupt else signal.SIG_IGN)
    if or_mode:
        window.showFullScreen()
    else:
        window.resize(1400, 1000)
        window.show()
    if screenshot:

        def grab():
            window.grab().save(screenshot)
            window.close()

        QtCore.QTimer.singleShot(int(after_s * 1000), grab)
    return app.exec()
