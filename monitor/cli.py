"""The ``monitor`` command line: one entry point, one subcommand per job.

The subcommands live in ``monitor.commands``, a module per family; this builds the parser
from them and runs the one asked for. User errors (bad files, bad flags) print one line
naming the problem and exit with status 1 (2 for malformed command lines); bugs keep their
traceback; an interrupt (Ctrl-C) exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monitor import __version__
from monitor.commands import alarms, attached, benchmarks, calibration, qa, recordings, streaming, training
from monitor.commands.options import Parser
from monitor.errors import MonitorError


def build_parser() -> argparse.ArgumentParser:
    """The ``monitor`` parser: every subcommand, in the order ``monitor --help`` lists them."""
    parser = Parser(
        prog="monitor",
        description="Vertebroplasty cement monitor: watches lateral and AP fluoroscopy for cement "
        "approaching the posterior wall and for leaks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        streaming.add_demo,
        recordings.add_simulate,
        recordings.add_info,
        streaming.add_replay,
        streaming.add_grab,
        attached.add_analyze,
        calibration.add_calibrate,
        recordings.add_simulate_grid,
        attached.add_view,
        attached.add_igtl,
        training.add_train,
        qa.add_audit,
        qa.add_export,
        qa.add_reanalyze,
        attached.add_keys,
        alarms.add_sounds,
        benchmarks.add_bench,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``monitor`` with ``argv`` (default: the process's); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # while the commands' modules load
        print("monitor: interrupted", file=sys.stderr)
        return 130
    try:
        return args.run(args)
    except MonitorError as e:
        print(f"monitor {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"monitor {args.command}: interrupted", file=sys.stderr)
        return 130
