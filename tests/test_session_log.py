"""The session log: append-only, hash-chained, and complete when processes are killed."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time

import numpy as np
import pytest

from monitor.errors import MonitorError
from monitor.io.store import DB_NAME, LogWriteError, SessionStore, decompress_image
from monitor.messages import FrameHeader
from monitor.recordings import default_recording
from tests.conftest import load_truth
from tests.test_audit import assert_alarms_match_truth
from tests.test_pipeline import replay_default


def header(seq: int, plane="lateral", shape=(64, 80), dtype="uint16", stream="stream1") -> FrameHeader:
    return FrameHeader(stream, plane, seq, seq, seq / 10, time.time(), shape, dtype, "MONOCHROME2", 12, "LIN")


def small_session(folder, frames=5) -> tuple[SessionStore, list[np.ndarray]]:
    store = SessionStore.create(folder, {"patient": "P-1", "operator": "Dr A"})
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 4096, (64, 80), dtype=np.uint16) for _ in range(frames)]
    for i, img in enumerate(images):
        store.add_frame(header(i), img, time.time())
        store.add_event("operator", "syringe", "1 mL delivered", value=1.0, level="L1")
    return store, images


def test_frames_come_back_bit_exact_and_the_chain_verifies(tmp_path):
    store, images = small_session(tmp_path / "s")
    store.close()
    store = SessionStore.open(tmp_path / "s")
    frames = store.records("frame")
    assert [r.seq for r in frames] == [0, 1, 2, 3, 4]
    for r, img in zip(frames, images, strict=True):
        assert np.array_equal(store.image(r.rec), img)
    assert store.verify() == []
    assert store.meta()["operator"] == "Dr A"
    records = [r.rec for r in store.records()]
    assert records == list(range(1, len(records) + 1))


def test_eight_bit_frames_round_trip_too():
    img = np.arange(256 * 3, dtype=np.uint16).reshape(16, 48).astype(np.uint8)
    from monitor.io.store import compress_image

    assert np.array_equal(decompress_image(compress_image(img), img.shape, "uint8"), img)


def test_the_journal_refuses_updates_and_deletes(tmp_path):
    small_session(tmp_path / "s")[0].close()
    db = sqlite3.connect(tmp_path / "s" / DB_NAME)
    for sql in ("UPDATE journal SET body='{}' WHERE rec=2", "DELETE FROM journal WHERE rec=2"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)


def _tamper(folder, *statements):
    db = sqlite3.connect(folder / DB_NAME)
    db.execute("DROP TRIGGER journal_append_only_update")
    db.execute("DROP TRIGGER journal_append_only_delete")
    db.execute("DROP TRIGGER images_append_only_update")
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()


def test_an_edited_record_breaks_the_chain_and_is_named(tmp_path):
    small_session(tmp_path / "s")[0].close()
    _tamper(tmp_path / "s", "UPDATE journal SET body=replace(body, '1.0', '3.0') WHERE rec=3")
    problems = SessionStore.open(tmp_path / "s").verify()
    assert problems == ["record 3 (event) does not match its hash: altered or inserted"]


def test_a_deleted_record_is_reported_as_a_gap(tmp_path):
    small_session(tmp_path / "s")[0].close()
    _tamper(tmp_path / "s", "DELETE FROM journal WHERE rec=4")
    problems = SessionStore.open(tmp_path / "s").verify()
    assert "records 4..4 are missing" in problems
    assert any("record 5" in p for p in problems)  # its successor no longer chains


def test_altered_pixels_are_found(tmp_path):
    small_session(tmp_path / "s")[0].close()
    _tamper(tmp_path / "s", "UPDATE images SET data=zeroblob(length(data)) WHERE rec=2")
    assert SessionStore.open(tmp_path / "s").verify() == [
        "record 2: the pixels of lateral frame 0 were altered"
    ]


def test_a_reopened_session_continues_the_same_chain(tmp_path):
    small_session(tmp_path / "s")[0].close()
    store = SessionStore.create(tmp_path / "s", {"operator": "Dr B"})
    store.add_event("logger", "restarted", "again")
    store.close()
    store = SessionStore.open(tmp_path / "s")
    assert store.verify() == []
    assert store.meta()["operator"] == "Dr B" and store.meta()["patient"] == "P-1"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "no such session directory"),
        (lambda d: d.mkdir(), "not a session"),
        (lambda d: (d.mkdir(), (d / DB_NAME).write_bytes(b"not a database at all" * 100)), "unreadable"),
        (lambda d: (d.mkdir(), (d / DB_NAME).write_bytes(b"")), "holds no session journal"),
    ],
)
def test_bad_session_directories_get_one_clear_message(tmp_path, make, message):
    make(tmp_path / "s")
    with pytest.raises(MonitorError, match=message):
        SessionStore.open(tmp_path / "s")


def test_a_half_written_database_is_refused_not_trusted(tmp_path):
    small_session(tmp_path / "s", frames=40)[0].close()
    path = tmp_path / "s" / DB_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MonitorError, match="unreadable|malformed"):
        store = SessionStore.open(tmp_path / "s")
        store.verify()


def test_a_session_from_a_newer_monitor_is_refused_with_its_version(tmp_path):
    small_session(tmp_path / "s")[0].close()
    db = sqlite3.connect(tmp_path / "s" / DB_NAME)
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(MonitorError, match="schema 7 is newer than this monitor"):
        SessionStore.open(tmp_path / "s")
    with pytest.raises(MonitorError, match="schema 7 is newer"):
        SessionStore.create(tmp_path / "s")


def test_a_locked_database_is_a_write_error_not_a_crash(tmp_path):
    store, _ = small_session(tmp_path / "s")
    blocker = sqlite3.connect(tmp_path / "s" / DB_NAME, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    store._db.execute("PRAGMA busy_timeout=100")
    with pytest.raises(LogWriteError, match="could not write.*locked"):
        store.add_event("operator", "pause", "paused")
    blocker.execute("ROLLBACK")
    store.add_event("operator", "pause", "paused")  # and it works again
    assert SessionStore.open(tmp_path / "s").verify() == []


def _create_session(folder: str) -> str:
    try:
        SessionStore.create(folder, {"creator": os.getpid()}).close()
        return "ok"
    except MonitorError as e:
        return str(e)


def test_processes_creating_the_same_new_log_at_once_all_get_it(tmp_path):
    """The logger and a replay may open a new session together: SQLite answers the
    loser of the switch to WAL "locked" at once, which must be waited out."""
    import multiprocessing

    folders = [str(tmp_path / f"s{i}") for i in range(60)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        outcomes = pool.map(_create_session, [f for f in folders for _ in range(4)], chunksize=1)
    assert [o for o in outcomes if o != "ok"] == []
    for folder in folders:
        assert SessionStore.open(folder).verify() == []


def _pid_of(folder, source: str) -> int:
    store = SessionStore.open(folder)
    try:
        started = [
            e for e in store.events() if e["source"] == source and e["event"] in ("started", "restarted")
        ]
        return int(started[-1]["detail"].split()[1]) if started else 0
    finally:
        store.close()


def _wait_for(folder, kind: str, count: int, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            store = SessionStore.open(folder)
        except MonitorError:  # not created yet, or being created
            time.sleep(0.05)
            continue
        n = store.count(kind)
        store.close()
        if n >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {count} {kind} records within {timeout} s")


def test_sigkill_of_logger_and_analyzer_mid_session_loses_nothing(tmp_path):
    """The kill test: SIGKILL the logger at about frame 12 and the analyzer at about
    frame 30 of the bundled posterior-leak case, replayed at its recorded rate.
    Both are restarted, the session completes with every frame and every result,
    the alarms are those of an undisturbed run (none lost, none doubled), and
    the hash chain is intact."""
    session = tmp_path / "s"
    proc = replay_default(session, "1", "--level", "L1")
    _wait_for(session, "frame", 24)
    os.kill(_pid_of(session, "logger"), signal.SIGKILL)
    _wait_for(session, "result", 60)
    analyzer = _pid_of(session, "analyzer")
    os.kill(analyzer, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    # (on a busy machine the source may have ended before the kill: restarted all the same)
    assert "logger died (signal 9)" in err and "analyzer died (signal 9)" in err
    assert proc.returncode == 0, err
    store = SessionStore.open(session)
    summary = store.meta()["summary"]
    assert summary["complete"], summary["problems"]
    assert summary["frames_logged"] == {"lateral": 48, "ap": 48}
    assert summary["results_logged"] == {"lateral": 48, "ap": 48}
    raised = [r.body | {"frame": r.frame} for r in store.records("alarm")]
    assert_alarms_match_truth(raised, load_truth(default_recording().lateral.parent))
    assert store.verify() == []
    restarts = [e for e in store.events() if e["event"] == "restarted"]
    assert {e["source"] for e in restarts} == {"logger", "analyzer"}
    resent = sum(bool(r.body.get("resent")) for r in store.records("frame"))
    store.close()
    # replayed, the session is whole: the frames resent to the restarted logger (logged after
    # later ones) come back where they were acquired, and every frame is judged again
    from tests.conftest import monitor_cli

    again = tmp_path / "again"
    replayed = monitor_cli("replay", "--session", session, "--log", again, "--headless", "--speed", "0")
    assert replayed.returncode == 0, replayed.stderr
    assert resent > 0 and "published 48 lateral, 48 ap frames" in replayed.stderr, (resent, replayed.stderr)
    store = SessionStore.open(session)
    sent = [(r.plane, r.frame) for r in sorted(store.records("frame"), key=lambda r: r.body["send_time"])]
    store.close()
    log = SessionStore.open(again)
    try:
        assert log.meta()["summary"]["results_logged"] == {"lateral": 48, "ap": 48}
        assert [(r["plane"], r["frame"]) for r in log.results()] == sent  # judged in the order sent
    finally:
        log.close()


def test_a_machine_crash_that_loses_the_wal_file_loses_about_a_second(tmp_path):
    """kill -9 of the whole monitor mid-session, then the write-ahead log lost as well (a
    power cut before the OS wrote it, or the .sqlite copied alone): what the database file
    holds is a whole, verifiable prefix of what the session had logged, short of it by about
    CHECKPOINT_S of records. (Without the timed checkpoint, up to 4 MB of WAL: 1-2.3 s of
    this case.) Measured against the log as it was at the kill (a copy with its -wal), not
    against the kill's time: on a loaded machine the logger runs behind the stream."""
    import shutil

    from monitor.io.store import CHECKPOINT_S

    session = tmp_path / "s"
    proc = replay_default(session, "1", "--level", "L1", start_new_session=True)
    _wait_for(session, "frame", 40)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    shutil.copytree(session, tmp_path / "as-killed")  # with its -wal: all that was committed
    whole = SessionStore.open(tmp_path / "as-killed")
    logged = whole.records()
    whole.close()
    for suffix in ("-wal", "-shm"):
        (session / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    store = SessionStore.open(session)
    records = store.records()
    assert [r.rec for r in records] == list(range(1, len(records) + 1))  # a prefix, no gap
    assert records == logged[: len(records)]  # as they were logged
    assert store.verify() == []  # every record there chains to the one before
    assert sum(r.kind == "frame" for r in logged) >= 40
    assert store.count("frame") >= 1
    lost = logged[-1].time - records[-1].time
    assert lost < CHECKPOINT_S + 0.8, f"{lost:.2f} s of records only in the lost -wal file"


def test_operator_commands_reach_the_analyzer_and_the_session_log(tmp_path):
    """Commands over the real control socket while a run is in progress: each is
    applied, logged with its value and level, and a command that cannot be
    carried out is logged as rejected with the reason."""
    import threading

    from monitor.io.transport import CommandSender
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions
    from tests.test_pipeline import SyntheticSource

    e = Endpoints.private()
    sender = CommandSender(e.control, "operator")

    def operate():
        _wait_for(tmp_path / "s", "result", 6)  # the lateral baseline is in
        sender.send("syringe", 1.5)
        sender.send("pause")
        sender.send("wall", [[10, 10], [12, 50]])  # no body, no scale: refused
        sender.send("body", {"plane": "lateral", "box": [5, 5, 30, 30]})  # no scale: refused
        sender.send("level", "L2")
        sender.send("acknowledge")

    times = [i / 10 for i in range(80)]  # 8 s: time enough for the commands on a busy machine
    operator = threading.Thread(target=operate)
    operator.start()
    code = run(
        SyntheticSource(times), RunSpec(str(tmp_path / "s"), "L1", endpoints=e), PaceOptions(speed=1.0)
    )
    operator.join()
    sender.close()
    assert code == 4  # logged whole; flat synthetic frames hold no vertebra: NOT MONITORED
    store = SessionStore.open(tmp_path / "s")
    ops = [
        (ev["source"], ev["event"], ev["value"], ev["level"])
        for ev in store.events()
        if ev["source"] == "operator"
    ]
    assert ops == [
        ("operator", "syringe", 1.5, "L1"),
        ("operator", "pause", None, "L1"),
        ("operator", "rejected-command", [[10, 10], [12, 50]], "L1"),
        ("operator", "rejected-command", {"plane": "lateral", "box": [5, 5, 30, 30]}, "L1"),
        ("operator", "level", "L2", "L2"),
        ("operator", "acknowledge", None, "L2"),
    ]
    rejected = [ev["detail"] for ev in store.events() if ev["event"] == "rejected-command"]
    assert (
        "wall" in rejected[0] and "scale" in rejected[0] and "body" in rejected[1] and "scale" in rejected[1]
    )
    levels = {r["level"] for r in store.results()}
    assert levels == {"L1", "L2"}
    assert store.verify() == []


def operated_run(folder, operate, speed: float = 1.0, **spec) -> int:
    """The bundled default case run through the monitor (RunSpec ``spec``) into the session
    ``folder`` at ``speed``, while ``operate(send)`` sends the operator's commands over the real
    control socket from a thread (``send(action, value=None)``); the run's exit status."""
    import threading

    from monitor.io.sources import DicomPairSource
    from monitor.io.transport import CommandSender
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions

    rec = default_recording()
    e = Endpoints.private()
    source = DicomPairSource(rec.lateral, rec.ap)
    sender = CommandSender(e.control, "operator")
    operator = threading.Thread(target=operate, args=(sender.send,))
    try:
        operator.start()
        run_spec = RunSpec(str(folder), "L1", endpoints=e, **spec)
        return run(source, run_spec, PaceOptions(speed=speed), say=lambda m: None)
    finally:
        if operator.ident is not None:  # started
            operator.join()
        sender.close()
        source.close()


def _judged(folder) -> tuple[list, list, list]:
    """What a session log says was judged: per result its plane, seq, level, distance, volume,
    volume scale and rules checked; the alarm changes; the operator's commands carried out,
    each with the count of results logged before it."""
    store = SessionStore.open(folder)
    try:
        results = [
            (
                r["plane"],
                r["seq"],
                r["level"],
                r["distance_mm"],
                r["volume_ml"],
                r["volume_scale"],
                r["checks"],
            )
            for r in store.results()
        ]
        alarms = [
            (r.body["state"], r.body["kind"], r.body["site"], r.body["priority"], r.body["frame"])
            for r in store.records("alarm")
        ]
        done = [r.rec for r in store.records("result")]
        commands = [
            (r.body["event"], r.body["value"], sum(rec < r.rec for rec in done))
            for r in store.records("event")
            if r.body["source"] in ("operator", "replay")
        ]
    finally:
        store.close()
    return results, alarms, commands


def test_a_replay_of_a_logged_session_reapplies_the_operators_live_edits_where_they_came(tmp_path):
    """The operator redraws the wall 6 pixels off the one found and later enters a syringe,
    over the real control socket while the bundled case runs at its recorded rate. ``monitor
    replay --session`` of that log says it re-applies both, carries each out before the same
    frame as live (logged with source "replay"), and so judges every frame as the logged session
    did: the same distances, volumes, scales, rules checked and alarms. The wall moved the
    distances (against the monitor alone), so a replay without the edits would not match."""
    from monitor.analyzer import analyse_source
    from monitor.io.sources import DicomPairSource
    from tests.conftest import monitor_cli

    rec = default_recording()
    live = tmp_path / "live"
    drawn = []

    def operate(send):
        _wait_for(live, "result", 12)
        store = SessionStore.open(live)
        walls = [r["overlay"]["wall"] for r in store.results() if r["overlay"].get("wall")]
        store.close()
        drawn.append([[x + 6.0, y] for x, y in walls[-1]])
        send("wall", drawn[-1])
        _wait_for(live, "result", 50)
        send("syringe", 1.0)

    code = operated_run(live, operate)
    assert code in (0, 4) and drawn
    results, alarms, commands = _judged(live)
    assert [c[:2] for c in commands] == [("wall", drawn[0]), ("syringe", 1.0)], commands

    replayed = monitor_cli(
        "replay", "--session", live, "--log", tmp_path / "again", "--headless", "--speed", "0"
    )
    assert replayed.returncode in (0, 4), replayed.stderr
    assert "re-applying the operator's edits the session logged" in replayed.stderr, replayed.stderr
    assert "wall at " in replayed.stderr and "syringe at " in replayed.stderr, replayed.stderr
    again, again_alarms, again_commands = _judged(tmp_path / "again")
    assert again_commands == commands  # the same commands, after as many results
    assert again == results
    assert again_alarms == alarms and any(a[0] == "raised" for a in alarms)
    store = SessionStore.open(tmp_path / "again")
    try:
        sources = {ev["event"]: ev["source"] for ev in store.events() if ev["event"] in ("wall", "syringe")}
        assert sources == {"wall": "replay", "syringe": "replay"} and store.meta()["level"] == "L1"
    finally:
        store.close()
    # the drawn wall changed what was measured: the monitor alone reads other distances
    alone = DicomPairSource(rec.lateral, rec.ap)
    own = {(i.plane, i.index): r.distance_mm for i, r in analyse_source(alone)}
    alone.close()
    moved = [
        abs(d - own[(plane, seq)])
        for plane, seq, _, d, *_ in results
        if d is not None and own.get((plane, seq)) is not None
    ]
    assert moved and max(moved) > 0.5, moved


def test_a_logged_sessions_commands_are_placed_by_the_frames_judged_before_them(tmp_path):
    """Where each logged command came, read back by the frames whose results were logged before
    it, not by counting results: the logger was down for lateral frame 2 (logged late, resent:
    its only copy, replayed where it was sent, before the AP frame acquired with it) and the
    analyzer never judged lateral frame 4. A
    command of the replay's own is a command; the analyzer's events and refused commands are
    not; one logged after the last frame, and one whose value the control socket would refuse
    (an edited log), are kept and marked."""
    from monitor.analyzer import result_for
    from monitor.io.sources import SessionSource

    store = SessionStore.create(tmp_path / "s")
    image = np.zeros((64, 80), np.uint16)
    frames = {(plane, seq): header(seq, plane) for plane in ("lateral", "ap") for seq in range(5)}

    def logged(*keys, resent=False):
        for key in keys:
            store.add_frame(frames[key], image, time.time(), resent=resent)

    def judged(*keys):
        for key in keys:
            store.add_result(result_for(frames[key]), "L1")

    logged(("lateral", 0), ("ap", 0), ("lateral", 1), ("ap", 1))
    judged(("lateral", 0), ("ap", 0), ("lateral", 1), ("ap", 1))
    store.add_event("operator", "wall", "posterior wall replaced", value=[[1, 2], [3, 4]])
    store.add_event("analyzer", "wall-armed", "5 mm rule armed")
    logged(("ap", 2), ("lateral", 3), ("ap", 3))
    logged(("lateral", 2), resent=True)  # sent before AP 2, acquired with it: back before it
    judged(("lateral", 2), ("ap", 2), ("lateral", 3))
    store.add_event("replay", "cleft", "level L1: a cleft is known", value=True)
    logged(("lateral", 4), ("ap", 4))
    judged(("ap", 3), ("ap", 4))  # lateral frame 4 never judged
    store.add_event("operator", "rejected-command", "wall: no lateral frame yet", value=[[0, 0], [1, 1]])
    store.add_event("operator", "syringe", "1 mL delivered", value=-5.0)
    judged(("lateral", 4))
    store.add_event("operator", "level", "level L2 started", value="L2")
    store.close()

    source = SessionSource(tmp_path / "s")
    try:
        order = [(f.plane, f.index) for f in source.frames()]
        commands = source.logged_commands()
    finally:
        source.close()
    assert order == [(p, i) for i in range(5) for p in ("lateral", "ap")]  # the resent frame where acquired
    assert [
        (c.action, c.source, c.frames_before, c.after_last_frame, c.refused is None) for c in commands
    ] == [
        ("wall", "operator", {"lateral": 2, "ap": 2}, False, True),
        ("cleft", "replay", {"lateral": 4, "ap": 3}, False, True),
        ("syringe", "operator", {"lateral": 4, "ap": 5}, False, False),
        ("level", "operator", {"lateral": 5, "ap": 5}, True, True),
    ]
    assert "syringe" in commands[2].refused and commands[0].value == [[1, 2], [3, 4]]


def test_a_restarted_analyzer_learns_the_levels_baseline_from_the_levels_own_first_frames(tmp_path):
    """The logger died in L1 and came back in L2: the frames resent to it (10-16, their only
    copies) are logged after the level began, though 10-12 were judged in L1. An analyzer
    restarted in L2 learns L2's baseline from L2's first frames judged (13-15), not from L1's
    (which may hold cement), nor from the first logged after the level's start (17-18)."""
    from monitor.analyzer import VisionAnalysis, result_for
    from monitor.vision.analysis import AnalysisConfig

    store = SessionStore.create(tmp_path / "s", {"level": "L1"})
    image = np.zeros((64, 80), np.uint16)
    frames = {(plane, seq): header(seq, plane) for seq in range(20) for plane in ("lateral", "ap")}

    def logged(*seqs, resent=False):
        for seq in seqs:
            for plane in ("lateral", "ap"):
                store.add_frame(frames[(plane, seq)], image, time.time(), resent=resent)

    def judged(*seqs, level):
        for seq in seqs:
            for plane in ("lateral", "ap"):
                store.add_result(result_for(frames[(plane, seq)]), level)

    logged(*range(10))
    judged(*range(13), level="L1")  # the logger is down from frame 10
    store.add_event("operator", "level", "level L2 started", value="L2")
    judged(13, 14, 15, 16, level="L2")
    logged(*range(10, 17), resent=True)
    logged(17, 18)
    judged(17, 18, level="L2")
    store.close()
    store = SessionStore.open(tmp_path / "s")
    fed = []
    restarted = VisionAnalysis(level="L2")
    restarted.process = lambda frame: fed.append((frame.header.plane, frame.header.seq))
    try:
        assert restarted.restore(store, "stream1")
    finally:
        store.close()
    baseline = AnalysisConfig().detection.baseline_frames
    assert fed == [(plane, seq) for plane in ("lateral", "ap") for seq in range(13, 13 + baseline)]


class _Quiet:
    """A results publisher and flow client that keep what they are given, for an AnalyzerNode
    run without sockets."""

    def __init__(self):
        self.sent = []

    def send(self, message):
        self.sent.append(message)

    def heartbeat(self, *_args):
        pass

    def ready(self, *_args):
        pass

    def ack(self, *_args):
        pass


def test_a_restarted_replay_neither_repeats_nor_misplaces_the_logged_edits(tmp_path):
    """The replay's analyzer restarted with the replay's log goes on after the commands that log
    says it carried out or refused (a syringe applied twice would double the volume); restarted
    with no log at a frame past an edit's place, its analysis starts afresh there, and the edit
    made on frames it never had is said not re-applied, not applied at once."""
    from monitor.analyzer import AnalyzerNode, VisionAnalysis, result_for
    from monitor.io.sources import LoggedCommand
    from monitor.io.transport import Frame

    def edit(action, value, lateral):
        return LoggedCommand({"lateral": lateral, "ap": 0}, action, value, "operator", None)

    edits = [
        edit("syringe", 1.0, 2),
        edit("wall", [[1, 2], [3, 4]], 5),
        edit("cleft", True, 5),
        edit("syringe", 1.0, 9),
    ]
    log = SessionStore.create(tmp_path / "again")
    log.add_event("replay", "syringe", "1 mL delivered", value=1.0)
    log.add_event("replay", "rejected-command", "wall: no lateral frame yet", value=[[1, 2], [3, 4]])
    log.close()
    out = _Quiet()
    node = AnalyzerNode(
        VisionAnalysis(), "stream1", out, _Quiet(), session_dir=tmp_path / "again", replayed=edits
    )
    assert node.replayed == edits[2:]
    node.log.close()

    # a log whose results reach lateral frame 6 but which lost the wall's and the cleft's events
    # (a failing disk): the frames judged say those two were carried out too
    lost = SessionStore.create(tmp_path / "lost")
    image = np.full((64, 80), 2000, np.uint16)
    for seq in range(7):
        lost.add_frame(header(seq, stream="again-stream"), image, time.time())
        if seq == 2:
            lost.add_event("replay", "syringe", "1 mL delivered", value=1.0)
        lost.add_result(result_for(header(seq, stream="again-stream")), "L1")
    lost.close()
    node = AnalyzerNode(
        VisionAnalysis(), "again-stream", _Quiet(), _Quiet(), session_dir=tmp_path / "lost", replayed=edits
    )
    assert node.done == {"lateral": 6} and node.replayed == edits[3:]
    node.log.close()

    fresh = AnalyzerNode(VisionAnalysis(), "stream1", out, _Quiet(), replayed=edits)
    image = np.full((64, 80), 2000, np.uint16)
    fresh.on_frame(Frame(header(5), image, time.time(), 0))
    said = [(m.event, m.source, m.detail) for m in out.sent if getattr(m, "event", None) is not None]
    assert said[0][:2] == ("rejected-command", "replay") and "not re-applied" in said[0][2]
    assert [s[:2] for s in said[1:]] == [
        ("rejected-command", "replay"),  # the wall: carried out, and refused (no body, no scale)
        ("cleft", "replay"),
    ], said
    assert fresh.analysis.case.known_cleft and fresh.replayed == edits[3:]


def test_a_full_disk_stops_the_log_not_the_monitoring(tmp_path):
    """The session's files may not grow past 2 MB (RLIMIT_FSIZE: writes fail as on a
    full disk). The analyzer keeps analysing and alarming on its stream, says
    loudly that logging failed, the run ends INCOMPLETE, and what was logged
    before the disk filled is still a readable, intact log."""
    import resource

    from monitor.io.transport import Subscriber
    from monitor.messages import Result, Status
    from monitor.pipeline import Endpoints
    from tests.test_pipeline import monitor

    e = Endpoints.private()
    results = Subscriber(e.results)
    rec = default_recording()

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 2**20, 2 * 2**20))

    proc = monitor(
        "replay", "--lateral", rec.lateral, "--ap", rec.ap, "--session", tmp_path / "s", "--headless",
        "--speed", "0", *e.args(), preexec_fn=small_disk,
    )  # fmt: skip
    seen, statuses, alarms = {}, [], []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = proc.poll() is None
        message = results.receive(100 if running else 500)
        if message is None and not running:
            break  # the run has ended and its last messages, queued here, are read
        if isinstance(message, Result):
            seen.setdefault(message.plane, []).append(message.frame)
            alarms += [(a["kind"], a["frame"]) for a in message.alarms]
        elif isinstance(message, Status):
            statuses.append(message)
    out, err = proc.communicate(timeout=30)
    results.close()
    # Every frame analysed to the end, in both planes. (The test's subscriber may join the
    # results stream a few frames late: ZeroMQ connects it after the analyzer binds.)
    for plane in ("lateral", "ap"):
        first = seen[plane][0]
        assert first <= 5 and seen[plane] == list(range(first, 48)), plane
    onset = load_truth(rec.lateral.parent)["leak"]["onset_frame"]
    assert any(
        kind == "extravasation" and frame >= onset for kind, frame in alarms
    )  # long after the disk filled
    failed = [s for s in statuses if s.event == "log-failed"]
    assert failed and "SESSION LOGGING FAILED" in failed[0].detail
    assert "SESSION LOGGING FAILED" in err and proc.returncode == 3 and "INCOMPLETE" in err
    assert "the session log is incomplete: " in err and "frame(s) could not be written" in err, err
    store = SessionStore.open(tmp_path / "s")
    assert 0 < store.count("frame") < 96 and store.verify() == []


def test_an_analyzer_restarted_after_a_syringe_keeps_the_volume_anchored_on_it(tmp_path):
    """The operator enters 1.5 mL delivered over the real control socket mid-run: the analyzer
    logs the darkness and the cement's shape it anchored that syringe on, and an analyzer
    restarted from the session log takes up the same anchors (scale, shape and total), so the
    volume does not fall back to the image alone after a crash."""
    import threading

    from monitor.analyzer import VisionAnalysis
    from monitor.io.sources import DicomPairSource
    from monitor.io.transport import CommandSender
    from monitor.pipeline import Endpoints, RunSpec, run
    from monitor.replay import PaceOptions

    rec = default_recording()
    e = Endpoints.private()
    sender = CommandSender(e.control, "operator")

    def operate():
        _wait_for(tmp_path / "s", "result", 60)  # cement in: the image reads some
        sender.send("syringe", 1.5)

    operator = threading.Thread(target=operate)
    operator.start()
    source = DicomPairSource(rec.lateral, rec.ap)
    code = run(source, RunSpec(str(tmp_path / "s"), "L1", endpoints=e), PaceOptions(speed=1.0))
    operator.join()
    sender.close()
    source.close()
    assert code in (0, 4)
    store = SessionStore.open(tmp_path / "s")
    entries = [ev for ev in store.events() if ev["event"] == "syringe-entry"]
    assert [ev["source"] for ev in entries] == ["analyzer"]
    darkness, shape = entries[0]["value"]["darkness_ml"], entries[0]["value"]["shape_ml"]
    assert entries[0]["value"]["syringe_ml"] == 1.5 and darkness > 0.2 and shape > 0.1

    restarted = VisionAnalysis(level="L1")
    assert restarted.restore(store, store.records("frame")[-1].body["stream"])
    assert restarted._pairs == [(darkness, 1.5)] and restarted._shape_anchors == [(shape, 1.5)]
    # the bundled case's darkness reads as the analyzer's physics has it: the darkness's growth
    assert entries[0]["value"]["growth"] == "darkness" and not restarted._growth_from_shape
    assert entries[0]["detail"].endswith("the volume grows from here as the image's darkness does")
    assert restarted.volume_scale == pytest.approx(1.5 / darkness)
    assert restarted.case.darkness_calibrated
    assert restarted.news() == []  # restored, not said again
    # the audit says the level's volume is on the syringes' scale from the entry on
    from monitor.audit import audit_json, text_report

    report = audit_json(store, verify_images=False)
    (level,) = report["levels"]
    assert level["volume_from"] == "syringe"
    text = text_report(report)
    assert "on the syringes' scale" in text
    # ... and how it reads the growth from the syringe on, in JSON and text
    # (the analyzer's entry is not a second syringe: one delivered, 1.5 mL)
    assert level["syringe_ml"] == 1.5 and [e["event"] for e in level["operator_events"]] == ["syringe"]
    (anchor,) = [e for e in level["volume_events"] if e["event"] == "syringe-entry"]
    assert anchor["source"] == "analyzer" and anchor["value"]["growth"] == "darkness"
    assert re.search(
        r"VOLUME .*analyzer: 1\.5 mL by syringe at this level.*grows from here as the image's", text
    )
    store.close()


def test_a_logged_session_of_runs_begun_apart_replays_at_its_own_frame_rate(tmp_path):
    """The lateral at 10 frames/s, the AP at 10 frames/s begun 0.03 s after it (runs paired on
    their acquisition clock since session 73): the replay's rate was the median step of both
    planes' frames merged (0.03 and 0.07 s: 20 frames/s, its loop's gap and pace off by half).
    It is each plane's own rate, the faster's."""
    import dataclasses

    from monitor.io.sources import SessionSource

    store = SessionStore.create(tmp_path / "s")
    image = np.zeros((64, 80), np.uint16)
    for seq in range(10):
        store.add_frame(header(seq, "lateral"), image, time.time())
        store.add_frame(dataclasses.replace(header(seq, "ap"), acq_time=seq / 10 + 0.03), image, time.time())
    store.close()
    source = SessionSource(tmp_path / "s")
    source.close()
    assert source.fps == pytest.approx(10.0)
