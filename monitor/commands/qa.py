"""``monitor audit`` and ``monitor export``: a logged session's QA report, a summary over many,
and its frames as DICOM."""

from __future__ import annotations

import sys
from pathlib import Path

from monitor.commands.options import positive_int
from monitor.errors import MonitorError


def add_audit(sub) -> None:
    p = sub.add_parser(
        "audit",
        help="QA report of a logged session, or a summary over many",
        description="Audit one session (text, --json, --html), or with --summary every session "
        "found under a directory.",
    )
    p.add_argument("session", type=Path, help="a session directory, or with --summary a directory of them")
    p.add_argument("--json", action="store_true", help="print the QA contract (or the summary) as JSON")
    p.add_argument("--html", type=Path, metavar="OUT", help="write a self-contained HTML report")
    p.add_argument("--summary", action="store_true", help="a table over every session under SESSION")
    p.add_argument("--csv", type=Path, metavar="OUT", help="with --summary: also write the table as CSV")
    p.add_argument(
        "--workers", type=positive_int, default=2, help="with --summary: processes reading sessions"
    )
    p.set_defaults(run=_run_audit)


def _run_audit(args) -> int:
    import json

    from monitor.audit import audit_exit_code, audit_json, text_report
    from monitor.io.store import SessionStore

    if args.summary:
        return _run_summary(args)
    if args.csv:
        raise MonitorError("--csv goes with --summary")
    store = SessionStore.open(args.session)
    try:
        report = audit_json(store)
        if args.html:
            from monitor.report import html_report

            try:
                args.html.parent.mkdir(parents=True, exist_ok=True)
                args.html.write_text(html_report(store, report), encoding="utf-8")
            except OSError as e:
                raise MonitorError(f"{args.html}: cannot write the report ({e.strerror})") from None
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(text_report(report))
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr)
    return audit_exit_code(report)


def _run_summary(args) -> int:
    import csv
    import json
    import time

    from monitor.audit import SUMMARY_COLUMNS, find_sessions, summarize

    started = time.monotonic()
    folders = find_sessions(args.session)
    if not folders:
        raise MonitorError(f"{args.session}: no session found under it")
    print(f"reading {len(folders)} session(s)", file=sys.stderr)
    table = summarize(
        folders,
        args.workers,
        progress=lambda n: print(f"  {n} read", file=sys.stderr),
        cache=_summary_cache(args.session),
    )
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows(table["rows"])
    if args.json:
        print(json.dumps(table, indent=1))
    else:
        for bad in table["untrusted"]:  # first: what QA must look at
            print(f"UNTRUSTED: {bad['folder']}: " + "; ".join(bad["problems"]))
        for miss in table["not_monitored"]:
            reasons = "; ".join(miss["reasons"])
            print(f"NOT MONITORED: {miss['folder']} level {miss['level'] or '?'}: {reasons}")
        widths = {c: max(len(c), *(len(_cell(r[c])) for r in table["rows"])) for c in SUMMARY_COLUMNS}
        print("  ".join(c.rjust(widths[c]) for c in SUMMARY_COLUMNS))
        for row in table["rows"]:
            print("  ".join(_cell(row[c]).rjust(widths[c]) for c in SUMMARY_COLUMNS))
        for bad in table["unreadable"]:
            print(f"unreadable: {bad['error']}")
    print(
        f"{table['sessions']} session(s) ({table['read']} read, the rest from the cache) "
        f"in {time.monotonic() - started:.1f} s"
        + (f", {len(table['unreadable'])} unreadable" if table["unreadable"] else ""),
        file=sys.stderr,
    )
    return 0


def _summary_cache(root: Path) -> Path | None:
    """Where the summary keeps session digests: in the sessions directory, if writable."""
    import os

    return root / ".monitor-summary-cache.sqlite" if os.access(root, os.W_OK) else None


def _cell(value) -> str:
    return "-" if value is None else str(value)


def add_export(sub) -> None:
    p = sub.add_parser(
        "export", help="write a logged session as DICOM multi-frame files, one per plane, for other viewers"
    )
    p.add_argument("session", type=Path, help="a session directory")
    p.add_argument("out", type=Path, help="directory for lateral.dcm and ap.dcm")
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="remove patient-identifying attributes (DICOM PS3.15 Basic Profile), e.g. for training",
    )
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from monitor.io.export import export_session

    export_session(args.session, args.out, args.deidentify)
    return 0
