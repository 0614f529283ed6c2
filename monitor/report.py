"""The audit as one self-contained HTML file: tables, charts (inline SVG) and
key frames with the overlay (PNG, embedded), for QA staff to read and archive."""

from __future__ import annotations

import base64
import datetime
import html
import urllib.parse

import cv2

from monitor.audit import NOT_RECORDED, SUMMARY_COLUMNS, VOLUME_BINS_ML, stopped_early_phrase, volume_phrase
from monitor.io.store import SessionStore
from monitor.render import render_frames, render_sent
from monitor.vision.stats import usual_step

PRIORITY_COLOURS = {"high": "#d62728", "medium": "#e6a700"}
MARKS = {"syringe": ("S", "#2ca02c"), "pause": ("II", "#555"), "resume": ("&#9654;", "#555")}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1a1a1a; max-width: 1200px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bad { background: #fde2e2; color: #8b0000; padding: 8px 12px; border-left: 4px solid #d62728; }
.good { background: #e3f4e3; padding: 8px 12px; border-left: 4px solid #2ca02c; }
.high { color: #d62728; font-weight: bold; } .medium { color: #a07400; font-weight: bold; }
figure { display: inline-block; margin: 6px 12px 6px 0; } figcaption { font-size: 12px; color: #444; }
.facts td:first-child { color: #555; }
"""


def html_report(store: SessionStore, report: dict) -> str:
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Audit {_e(report['session'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Vertebroplasty session audit: {_e(report['session'])}</h1>",
        _facts(report),
        _status(report),
    ]
    if not report["levels"]:  # as the text audit says it: a log of no frame read is no clean record
        parts.append("<div class='bad'><b>NOT MONITORED</b>: no frame was analysed.</div>")
    for level in report["levels"]:
        parts.append(f"<h2>Level {_e(level['level'] or NOT_RECORDED)}</h2>")
        parts.append(_monitoring(level))
        parts.append(_level_table(level))
        parts.append(
            _chart(level, "distance_mm", "distance to posterior wall (mm)", line=5.0, read_from=("lateral",))
        )
        parts.append(
            _chart(
                level,
                "volume_ml",
                "cement volume (mL)",
                marks=level["operator_events"],
                band=("volume_low_ml", "volume_high_ml"),
            )
        )
        parts.append(_alarm_table(level))
        parts.append(_caveats(level))
        if level.get("wall"):
            parts.append("<h3>Posterior wall: the 5 mm rule armed or withheld</h3>")
            parts.append(_events_table(level["wall"]))
        if level.get("views"):
            parts.append("<h3>A view whose frames stopped: the level read in the other alone</h3>")
            parts.append(_events_table(level["views"]))
        if level.get("processing"):
            parts.append("<h3>Image processing: the C-arm's temporal filter</h3>")
            parts.append(_events_table(level["processing"]))
        if level.get("volume_events"):
            parts.append("<h3>Volume: the darkness against the shape, and each syringe's anchor</h3>")
            parts.append(_events_table(level["volume_events"]))
        parts.append(_key_frames(store, level))
        if level["operator_events"]:
            parts.append("<h3>Operator actions</h3>")
            parts.append(_events_table(level["operator_events"]))
    if report["faults"]:
        parts.append("<h2>Stream and process events</h2>")
        parts.append(_events_table(report["faults"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_html(table: dict, links: dict[str, str] | None = None) -> str:
    """The summary over many sessions (:func:`monitor.audit.summarize`) as one self-contained
    page for a QA officer: what to look at first (untrusted, unreadable, not monitored), the
    sessions that leaked (each linked to its own report where ``links`` has one: folder ->
    relative URL), then a row per operator and level with its volume histogram."""
    links = links or {}
    scope = f"sessions {table['filter']}" if table["filter"] else "every session found"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>Vertebroplasty QA summary</title><style>{STYLE}</style></head><body>",
        "<h1>Vertebroplasty QA summary</h1>",
        f"<p>{_e(scope)}: {table['matched']} session(s)"
        + (f", {len(table['unreadable'])} unreadable" if table["unreadable"] else "")
        + f". Made {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; times are this"
        " computer's local time.</p>",
        _look_first(table),
        "<h2>Leaks</h2>",
        _leak_table(table["leaked"], links),
        "<h2>Per operator and level</h2>",
        _summary_rows(table),
        "</body></html>",
    ]
    return "\n".join(parts)


def _look_first(table: dict) -> str:
    """Untrusted, unreadable, incomplete, stopped-early and unmonitored sessions, each said,
    before any figure."""
    items = [f"UNTRUSTED {_e(b['folder'])}: {_e('; '.join(b['problems']))}" for b in table["untrusted"]]
    items += [f"UNREADABLE {_e(b['error'])}" for b in table["unreadable"]]
    untrusted = {b["folder"] for b in table["untrusted"]}  # (said above, whole or not)
    items += [
        f"INCOMPLETE {_e(folder)}: the log says it is not whole"
        for folder in table.get("incomplete", [])
        if folder not in untrusted
    ]
    items += [
        f"STOPPED EARLY {_e(c['folder'])}: {_e(stopped_early_phrase(c['unsent']))}"
        for c in table.get("stopped_early", [])
    ]
    items += [
        f"NOT MONITORED {_e(m['folder'])}, level {_e(m['level'])}: {_e('; '.join(m['reasons']))}"
        for m in table["not_monitored"]
    ]
    if not items:
        return "<p class='good'>Every session's log is whole and verifies, and every level was monitored.</p>"
    listed = "".join(f"<li>{i}</li>" for i in items)
    return f"<div class='bad'><b>Look at these first</b><ul>{listed}</ul></div>"


def _leak_table(leaked: list[dict], links: dict[str, str]) -> str:
    if not leaked:
        return "<p>No leak alarm in these sessions.</p>"
    rows = []
    for leak in leaked:
        folder = _e(leak["folder"])
        link = links.get(leak["folder"])
        href = html.escape(urllib.parse.quote(link), quote=True) if link else None
        cell = f"<a href='{href}'>{folder}</a>" if href else folder
        created = leak["created"]
        when = "" if created is None else datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M")
        rows.append(
            f"<tr><td>{cell}</td><td>{when}</td><td>{_e(leak['room'] or NOT_RECORDED)}</td>"
            f"<td>{_e(leak['operator'])}</td><td>{_e(leak['level'])}</td>"
            f"<td class='num'>{leak['leaks']}</td><td class='num'>{leak['possible_leaks']}</td>"
            f"<td class='num'>{_num(leak['volume_ml'], 2, ' mL')}</td></tr>"
        )
    head = "<tr><th>session</th><th>begun</th><th>room</th><th>operator</th><th>level</th>"
    head += "<th>leak alarms (high)</th><th>possible leaks (medium)</th><th>volume</th></tr>"
    return "<table>" + head + "".join(rows) + "</table>"


def _summary_rows(table: dict) -> str:
    if not table["rows"]:
        return "<p>No level matches.</p>"
    head = "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in SUMMARY_COLUMNS)
    rows = []
    for row, histogram in zip(table["rows"], table["volume_histograms"], strict=True):
        cells = "".join(
            f"<td class='num'>{_e(row[c])}</td>"
            if isinstance(row[c], (int, float))
            else f"<td>{'&ndash;' if row[c] is None else _e(row[c])}</td>"
            for c in SUMMARY_COLUMNS
        )
        rows.append(f"<tr>{cells}<td>{_histogram(histogram['counts'])}</td></tr>")
    return f"<table><tr>{head}<th>volumes, 0-{VOLUME_BINS_ML}+ mL</th></tr>" + "".join(rows) + "</table>"


def _histogram(counts: list[int], w: int = 160, h: int = 40) -> str:
    """Sessions per 1 mL of volume as an inline SVG bar chart; bars over 8 mL in red
    (the QA threshold, ../shared/DOMAIN.md)."""
    top = max(counts) or 1
    bar = w / len(counts)
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{h - 12 - (h - 14) * n / top:.1f}' width='{bar - 1:.1f}'"
        f" height='{(h - 14) * n / top:.1f}' fill='{'#d62728' if i >= 8 else '#4878a8'}'>"
        f"<title>{i}{'+' if i == len(counts) - 1 else f'-{i + 1}'} mL: {n}</title></rect>"
        for i, n in enumerate(counts)
    )
    axis = (
        f"<text x='0' y='{h - 1}' font-size='9'>0</text>"
        f"<text x='{w}' y='{h - 1}' font-size='9' text-anchor='end'>{len(counts) - 1}+</text>"
    )
    return f"<svg width='{w}' height='{h}' role='img'>{bars}{axis}</svg>"


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits=2, unit="") -> str:
    return "&ndash;" if value is None else f"{value:.{digits}f}{unit}"


def _facts(report: dict) -> str:
    created = report.get("created")
    when = (
        datetime.datetime.fromtimestamp(created, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        if created
        else None
    )
    rows = [
        ("patient reference", report.get("patient")),
        ("operator", report.get("operator")),
        ("room / device", report.get("room")),
        ("recorded", when),
        ("scale", _scale(report.get("calibration"))),
        ("software", report.get("software_version")),
    ]
    cells = "".join(f"<tr><td>{k}</td><td>{_e(v) or '&ndash;'}</td></tr>" for k, v in rows)
    return f"<table class='facts'>{cells}</table>"


def _scale(calibration: dict | None) -> str | None:
    """Per plane: mm per pixel at the vertebra, and where it came from."""
    if not calibration:
        return None
    parts = []
    for plane, scale in calibration.items():
        if not scale:
            parts.append(f"{plane}: pixels only (uncalibrated)")
            continue
        spacing = scale.get("spacing_mm") or [None]
        origin = scale.get("calibration") or scale.get("source")
        parts.append(f"{plane}: {spacing[0]:.4f} mm/pixel at the vertebra ({origin})")
    return "; ".join(parts)


def _status(report: dict) -> str:
    warned = report.get("source_warnings") or []
    warnings = (
        "<div class='bad'><b>The recording did not say, and the monitor assumed:</b><ul>"
        + "".join(f"<li>{_e(w)}</li>" for w in warned)
        + "</ul></div>"
        if warned
        else ""
    )
    if report.get("stopped_early"):
        said = _e(stopped_early_phrase(report["stopped_early"]))
        warnings += f"<div class='bad'><b>Stopped early:</b> {said}.</div>"
    if report["complete"]:
        return warnings + (
            "<p class='good'>Log complete and intact: every frame sent was logged and analysed, "
            "hash chain verified.</p>"
        )
    items = "".join(f"<li>{_e(p)}</li>" for p in report["problems"])
    return warnings + f"<div class='bad'><b>Do not trust this log blindly:</b><ul>{items}</ul></div>"


def _monitoring(level: dict) -> str:
    """Whether the safety rules were evaluated on the level's frames: first, before any figure."""
    m = level["monitoring"]
    names = {"proximity": "5 mm rule", "leak": "leak check"}
    shares = "; ".join(
        f"{plane}: "
        + ", ".join(f"{names[k]} {v:.0%}" for k, v in c.items() if k in names)
        + f" of {c['frames']} frames"
        for plane, c in m["planes"].items()
    )
    if m["monitored"] is False:
        items = "".join(f"<li>{_e(r)}</li>" for r in m["reasons"])
        return (
            f"<div class='bad'><b>NOT MONITORED</b>: on too many frames the safety rules were not "
            f"evaluated (under {m['threshold']:.0%}), so the absence of alarms here means nothing."
            f"<ul>{items}</ul></div>"
        )
    if m["monitored"] is None:
        return "<p class='bad'>This log does not record which frames were checked (an older analyzer).</p>"
    return f"<p class='good'>Monitored: {_e(shares)}.</p>"


def _level_table(level: dict) -> str:
    leaks = [a for a in level["alarms"] if a["kind"] == "extravasation"]
    n_high = sum(a["priority"] == "high" for a in leaks)
    # a possible leak (medium) is one the analyzer could not confirm: QA must see it beside the high
    possible = len(leaks) - n_high
    leak_cell = f"{n_high} high, {possible} possible (medium)" if possible else str(n_high)
    cells = [
        ("volume (as reported live), its 68 % interval", _e(volume_phrase(level))),
        ("image-based volume (before syringe calibration)", _num(level.get("image_volume_ml"), 2, " mL")),
        ("syringe volume (operator)", _num(level["syringe_ml"], 2, " mL")),
        ("closest to the posterior wall", _num(level["min_distance_mm"], 1, " mm")),
        ("alarms", str(len(level["alarms"]))),
        ("leak alarms", leak_cell),
        ("cannulas seen in AP", _e(level["cannulas"]) or "&ndash;"),
        ("time analysed", f"{_num(level['start_s'], 1)} to {_num(level['end_s'], 1)} s"),
    ]
    return (
        "<table>" + "".join(f"<tr><th>{k}</th><td class='num'>{v}</td></tr>" for k, v in cells) + "</table>"
    )


def _caveats(level: dict) -> str:
    """What qualified the measurements: a reviewer must see why a distance or a volume is missing."""
    if not level.get("caveats"):
        return ""

    def span(c: dict, first: str, last: str, digits: int = 0) -> str:
        if c.get(first) is None:
            return "&ndash;"
        return f"{c[first]:.{digits}f}" + (f"&ndash;{c[last]:.{digits}f}" if c[last] != c[first] else "")

    rows = "".join(
        f"<tr><td>{c['plane']}</td><td class='num'>{span(c, 'first_frame', 'last_frame')}</td>"
        f"<td class='num'>{span(c, 'first_s', 'last_s', 2)}</td>"
        f"<td class='num'>{c['frames']}</td><td>{_e(c['status'])}</td></tr>"
        for c in level["caveats"]
    )
    head = "<tr><th>plane</th><th>frames</th><th>time (s)</th><th>count</th><th>caveat</th></tr>"
    return "<h3>Measurement caveats</h3><table>" + head + rows + "</table>"


def _alarm_table(level: dict) -> str:
    if not level["alarms"]:
        return "<p>No alarm was raised at this level.</p>"
    head = (
        "<tr><th>frame</th><th>time (s)</th><th>alarm</th><th>plane</th><th>distance (mm)</th>"
        "<th>injection stopped after (s)</th><th>cement after alarm (mL)</th>"
        "<th>acknowledged after (s)</th></tr>"
    )
    rows = []
    for a in level["alarms"]:
        what = a["kind"] + (f" ({a['site']})" if a["site"] else "")
        stopped = (
            _num(a["stopped_after_s"], 1)
            if a["stopped_after_s"] is not None
            else "<span class='high'>not stopped</span>"
        )
        if a["stopped_after_s"] is not None and a.get("stop_unseen_s"):  # the stop's latest time
            stopped = f"&le; {stopped}<br><small>not seen for {_num(a['stop_unseen_s'], 1)} s</small>"
        rows.append(
            f"<tr><td class='num'>{a['frame']}</td><td class='num'>{_num(a['time_s'], 2)}</td>"
            f"<td class='{a['priority']}'>{a['priority'].upper()} {_e(what)}"
            + (f"<br><small>{_e(a['reason'])}</small>" if a.get("reason") else "")
            + f"</td><td>{a['plane']}</td>"
            f"<td class='num'>{_num(a['distance_mm'], 1)}</td><td class='num'>{stopped}</td>"
            f"<td class='num'>{_num(a['injected_after_ml'], 2)}</td>"
            f"<td class='num'>{_num(a['acknowledged_after_s'], 1)}</td></tr>"
        )
    return "<h3>Alarms and reactions</h3><table>" + head + "".join(rows) + "</table>"


def _events_table(events: list[dict]) -> str:
    rows = "".join(
        f"<tr><td class='num'>{_clock(e)}</td><td>{_e(e.get('source'))}</td><td>{_e(e['event'])}</td>"
        f"<td>{_e(e.get('detail'))}</td></tr>"
        for e in events
    )
    return f"<table><tr><th>time</th><th>from</th><th>event</th><th>detail</th></tr>{rows}</table>"


def _clock(event: dict) -> str:
    """Stream time when known (as on the charts), else the wall clock."""
    if event.get("acq_time") is not None:
        return f"{event['acq_time']:.2f} s"
    return datetime.datetime.fromtimestamp(event["time"], datetime.timezone.utc).strftime("%H:%M:%S UTC")


def _chart(
    level: dict,
    key: str,
    label: str,
    line: float | None = None,
    marks=(),
    band: tuple[str, str] | None = None,
    read_from: tuple[str, ...] | None = None,
    w=900,
    h=220,
) -> str:
    """A line chart as inline SVG, with alarm markers, an optional threshold line, ``marks``
    (operator events: syringe, pause, resume) along the bottom, and ``band``: the keys of
    the frames' interval (low, high), shaded behind the line where the frames give one.
    Stretches of frames skipped are shaded grey; the line is not drawn where every plane of
    ``read_from`` (default: the level's planes) was skipped, nor across a gap in the values."""
    unread = _unread_spans(level)
    needs = set(read_from or (level.get("monitoring") or {}).get("planes") or ("lateral", "ap"))

    def read(t: float) -> bool:  # a value carried over frames not read is not drawn as measured
        return not needs <= {plane for a, b, plane, _ in unread if a <= t <= b}

    points = [(f["time_s"], f[key]) for f in level["frames"] if f[key] is not None and read(f["time_s"])]
    if len(points) < 2:
        return f"<p>{_e(label)}: not measured.</p>"
    interval = []
    if band is not None:
        interval = [
            (f["time_s"], f.get(band[0]), f.get(band[1]))
            for f in level["frames"]
            if f[key] is not None
            and f.get(band[0]) is not None
            and f.get(band[1]) is not None
            and read(f["time_s"])
        ]
    left, right, top, bottom = 56, 12, 12, 30
    t0, t1 = level["start_s"], level["end_s"]  # the same time axis for every chart of a level
    values = [p[1] for p in points] + ([line] if line is not None else [])
    values += [v for _, low, high in interval for v in (low, high)]
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or 1.0)
    lo, hi = (lo - pad if lo < 0 else max(0.0, lo - pad)), hi + pad  # no axis below 0 for what is not

    def x(t):
        return left + (t - t0) / ((t1 - t0) or 1.0) * (w - left - right)

    def y(v):
        return top + (hi - v) / (hi - lo) * (h - top - bottom)

    svg = [f"<svg width='{w}' height='{h}' viewBox='0 0 {w} {h}' xmlns='http://www.w3.org/2000/svg'>"]
    svg.append(
        f"<rect x='{left}' y='{top}' width='{w - left - right}' height='{h - top - bottom}' "
        "fill='#fafafa' stroke='#ccc'/>"
    )
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        svg.append(f"<text x='{left - 6}' y='{y(v) + 4:.1f}' font-size='11' text-anchor='end'>{v:.1f}</text>")
    for i in range(6):
        t = t0 + (t1 - t0) * i / 5
        svg.append(f"<text x='{x(t):.1f}' y='{h - 12}' font-size='11' text-anchor='middle'>{t:.1f} s</text>")
    if line is not None:
        svg.append(
            f"<line x1='{left}' x2='{w - right}' y1='{y(line):.1f}' y2='{y(line):.1f}' stroke='#d62728' "
            f"stroke-dasharray='6 4'/><text x='{w - right - 4}' y='{y(line) - 4:.1f}' font-size='11' "
            f"fill='#d62728' text-anchor='end'>{line:g} mm</text>"
        )
    for a in level["alarms"]:
        colour = PRIORITY_COLOURS.get(a["priority"], "#555")
        svg.append(
            f"<line x1='{x(a['time_s']):.1f}' x2='{x(a['time_s']):.1f}' y1='{top}' y2='{h - bottom}' "
            f"stroke='{colour}' stroke-width='2' opacity='0.7'>"
            f"<title>{_e(a['kind'])} frame {a['frame']}</title></line>"
        )
    for e in marks:
        if e["event"] not in MARKS or e.get("acq_time") is None:
            continue
        symbol, colour = MARKS[e["event"]]
        svg.append(
            f"<text x='{x(e['acq_time']):.1f}' y='{h - bottom - 4}' font-size='13' fill='{colour}' "
            f"text-anchor='middle'>{symbol}<title>{_e(e['detail'])}</title></text>"
        )
    for t_from, t_to, _, why in unread:  # frames not read: a gap in the line, shaded, not bridged
        svg.append(
            f"<rect class='unread' x='{x(t_from):.1f}' y='{top}' width='{max(x(t_to) - x(t_from), 2.0):.1f}' "
            f"height='{h - top - bottom}' fill='#999' fill-opacity='0.3'><title>{_e(why)}</title></rect>"
        )
    gap = 2.5 * (usual_step(t for t, _ in points) or float("inf"))
    for run in _time_runs(interval, gap):  # the 68 % interval: up along the high bounds, back along the low
        if len(run) < 2:
            continue
        outline = [(t, high) for t, _, high in run] + [(t, low) for t, low, _ in reversed(run)]
        shape = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in outline)
        svg.append(
            f"<polygon class='interval' points='{shape}' fill='#1f77b4' fill-opacity='0.18' stroke='none'/>"
        )
    for run in _time_runs(points, gap):
        if len(run) == 1:  # a reading alone between gaps: a dot, not lost
            t, v = run[0]
            svg.append(f"<circle cx='{x(t):.1f}' cy='{y(v):.1f}' r='2.5' fill='#1f77b4'/>")
            continue
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
        svg.append(f"<polyline points='{path}' fill='none' stroke='#1f77b4' stroke-width='2'/>")
    legend = "  (shaded: its 68 % interval)" if len(interval) >= 2 else ""
    legend += "  (grey: frames not read)" if unread else ""
    legend += "  (S syringe mL delivered, II paused, \u25b6 resumed)" if marks else ""
    svg.append(f"<text x='{left + 6}' y='{top + 14}' font-size='12' fill='#333'>{_e(label + legend)}</text>")
    svg.append("</svg>")
    return "".join(svg)


def _time_runs(points: list[tuple], gap: float = float("inf")) -> list[list[tuple]]:
    """``points`` (time first, s) cut where the time goes back (a level's rows are stream by
    stream: a source restarted in a session starts its time again) or jumps by more than
    ``gap`` s (frames not read or not measured between: a line across them read as a measured
    approach, session 77), each drawn as a line of its own."""
    runs: list[list[tuple]] = []
    for p in points:
        last = runs[-1][-1][0] if runs else None
        if last is None or p[0] <= last or p[0] - last > gap:  # (a stream's instants are distinct, rising)
            runs.append([])
        runs[-1].append(p)
    return runs


def _unread_spans(level: dict) -> list[tuple[float, float, str, str]]:
    """The stretches of a level whose frames were skipped (blank, held, saturated, the image
    changed): (from s, to s, plane, what was said), for a chart to shade."""
    return [
        (
            c["first_s"],
            c["last_s"],
            c["plane"],
            f"{c['plane']} frames {c['first_frame']}-{c['last_frame']}: {c['status']}",
        )
        for c in level.get("caveats", [])
        if c.get("first_s") is not None and str(c.get("status", "")).startswith("skipped")
    ]


def _key_frames(store: SessionStore, level: dict) -> str:
    """Each alarm's frame, and the frame where injection stopped after it, with the overlay.
    An alarm names its frame by its place in the stream (``stream``, ``seq``): a looped replay
    or a restarted source sends a frame index again, and the image must be the one the alarm was
    raised on; alarms of logs from before 2026-12-06 name it by index alone."""
    wanted: dict = {}  # (stream, plane, seq), or a frame index -> its caption
    sent = None
    for a in level["alarms"]:
        by_place = a.get("stream") is not None and a.get("seq") is not None
        at = f" at {a['time_s']:.2f} s" if by_place else ""  # a looped replay's passes share indexes
        said = f"frame {a['frame']}{at}: {a['priority']} {a['kind']} alarm raised"
        stop_time = None if a["stopped_after_s"] is None else a["time_s"] + a["stopped_after_s"]
        within = "within " if a.get("stop_unseen_s") else ""  # frames not read before the stop
        stopped = f"injection stopped, {within}{a['stopped_after_s'] or 0:.1f} s after frame {a['frame']}"
        if by_place:
            sent = store.frames_as_sent() if sent is None else sent
            wanted.setdefault((a["stream"], a["plane"], a["seq"]), said)
            same = [r for r in sent if r.body["stream"] == a["stream"] and r.plane == a["plane"]]
            if stop_time is not None and same:
                stop = min(same, key=lambda r: abs(r.body["acq_time"] - stop_time))
                stop_said = f"frame {stop.frame} at {stop.body['acq_time']:.2f} s: {stopped}"
                wanted.setdefault((a["stream"], stop.plane, stop.seq), stop_said)
            continue
        wanted.setdefault(a["frame"], said)
        if stop_time is not None:
            stop = min(level["frames"], key=lambda f: abs(f["time_s"] - stop_time))["frame"]
            wanted.setdefault(stop, f"frame {stop}: {stopped}")
    if not wanted:
        return ""
    figures = []
    indexes = sorted(k for k in wanted if isinstance(k, int))
    places = {(r.body["stream"], r.plane, r.seq): n for n, r in enumerate(sent or [])}
    named = sorted((k for k in wanted if not isinstance(k, int)), key=lambda k: places.get(k, -1))
    drawn = [*render_frames(store, indexes, None, size=420), *render_sent(store, named, size=420)]
    for key in set(named) - {key for key, _ in drawn}:  # said, not silently left out
        figures.append(
            f"<figure><figcaption>{_e(wanted[key])} (its image is not in the log)</figcaption></figure>"
        )
    for key, image in drawn:
        ok, png = cv2.imencode(".png", image)
        if not ok:
            continue
        data = base64.b64encode(png.tobytes()).decode()
        figures.append(
            f"<figure><img src='data:image/png;base64,{data}' alt='{_e(wanted[key].split(':')[0])}'>"
            f"<figcaption>{_e(wanted[key])}</figcaption></figure>"
        )
    return "<h3>Key frames</h3>" + "".join(figures)
