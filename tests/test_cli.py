"""The command line as a user runs it: real processes, real files."""

from __future__ import annotations

import json

import cv2
import pytest

from monitor.io.dicom import open_recording
from monitor.recordings import bundled_recordings, default_recording
from tests.conftest import monitor_cli

run = monitor_cli


def test_simulate_writes_both_planes_truth_and_contact_sheet(tmp_path):
    result = run(
        "simulate",
        str(tmp_path / "case"),
        "--seed",
        "2",
        "--scenario",
        "venous",
        "--size",
        "96",
        "--frames",
        "8",
        "--fps",
        "30",
        "--bits",
        "10",
        "--contact-sheet",
    )
    assert result.returncode == 0, result.stderr
    assert "venous leak" in result.stdout or "no leak" in result.stdout
    truth = json.loads((tmp_path / "case" / "truth.json").read_text())
    assert len(truth["frames"]) == 8 and truth["config"]["fps"] == 30
    for plane in ("lateral", "ap"):
        with open_recording(tmp_path / "case" / f"{plane}.dcm") as rec:
            assert rec.info.plane == plane and rec.info.n_frames == 8 and rec.info.bits_stored == 10
    sheet = cv2.imread(str(tmp_path / "case" / "contact_sheet.png"))
    assert sheet is not None and sheet.shape[1] == 3 * 384


def test_info_describes_a_recording(tmp_path):
    rec = default_recording()
    result = run("info", str(rec.lateral))
    assert result.returncode == 0, result.stderr
    assert "plane        lateral" in result.stdout
    assert "mm/pixel at the vertebra" in result.stdout and "frames/s from FrameTime" in result.stdout


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d / "missing.dcm", "no such file"),
        (lambda d: (d / "x.dcm").write_text("hello") and d / "x.dcm", "not a DICOM file"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, make, reason):
    path = make(tmp_path)
    result = run("info", str(path))
    assert result.returncode == 1
    assert reason in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_flag_values_are_refused_clearly(tmp_path):
    result = run("simulate", str(tmp_path / "x"), "--bits", "20")
    assert result.returncode == 1 and "bits must be 8..16" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_monitors_the_bundled_default_and_writes_annotated_frames(tmp_path):
    result = run("demo", "--out", str(tmp_path / "demo"), "--headless")
    assert result.returncode == 0, result.stderr
    assert default_recording().name in result.stdout
    assert "ALARM" in result.stdout and "extravasation (posterior)" in result.stdout
    pictures = sorted((tmp_path / "demo" / "frames").glob("frame_*.png"))
    assert len(pictures) >= 3
    image = cv2.imread(str(pictures[-1]))
    assert image is not None and image.shape[1] > 900  # both planes side by side
    assert (tmp_path / "demo" / "session" / "session.sqlite").is_file()
    video = cv2.VideoCapture(str(tmp_path / "demo" / "annotated.avi"))
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 48 and video.get(cv2.CAP_PROP_FRAME_WIDTH) > 900
    assert "annotated.avi" in result.stdout


def test_bundled_recordings_match_their_manifest():
    recordings = bundled_recordings()
    assert {r.name for r in recordings} >= {"posterior-leak", "no-leak", "venous-leak"}
    for r in recordings:
        truth = json.loads(r.truth.read_text())
        assert r.command.startswith("monitor simulate")
        for token in ("--seed", "--scenario"):
            assert token in r.command
        assert f"--seed {truth['config']['seed']}" in r.command
        assert f"--scenario {truth['config']['scenario']}" in r.command
        leak = truth["leak"]["onset_frame"] is not None
        assert leak == ("leak" in r.shows and "no leak" not in r.shows)
        for path in (r.lateral, r.ap):
            with open_recording(path) as rec:
                assert rec.info.n_frames == len(truth["frames"])


def _every_parser():
    import argparse

    from monitor.cli import build_parser

    stack = [("monitor", build_parser())]
    while stack:
        name, parser = stack.pop()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack += [(f"{name} {sub}", p) for sub, p in action.choices.items()]


def test_every_option_of_every_subcommand_says_what_it_does_and_its_default():
    """Issue 20: --help for every option, defaults shown. An option whose default is a value
    prints it; one whose default is explained in words (or has none) says so itself."""
    import argparse

    undocumented, silent = [], []
    for name, parser in _every_parser():
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(
                action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)
            ):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                undocumented.append(label)
            elif (
                action.option_strings
                and action.default is not None
                and action.default is not False
                and f"default: {action.default}" not in " ".join(text.split())
                and "default" not in action.help
            ):
                silent.append(label)
    assert undocumented == [] and silent == [], (undocumented, silent)
