"""``monitor audit``, ``monitor export`` and ``monitor reanalyze``: a logged session's QA report,
a summary over many, its frames as DICOM, and the archive re-run with the current vision."""

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
        "found under a directory. Exit status: 0 complete and monitored; 3 a log incomplete,"
        " unreadable or failing its integrity check; 4 a level NOT MONITORED; 5 STOPPED EARLY (a"
        " recording not sent to its end: the record covers part of it). With --summary, the worst"
        " session's, in that order.",
    )
    p.add_argument("session", type=Path, help="a session directory, or with --summary a directory of them")
    p.add_argument("--json", action="store_true", help="print the QA contract (or the summary) as JSON")
    p.add_argument("--html", type=Path, metavar="OUT", help="write a self-contained HTML report")
    p.add_argument("--summary", action="store_true", help="a table over every session under SESSION")
    p.add_argument("--csv", type=Path, metavar="OUT", help="with --summary: also write the table as CSV")
    p.add_argument(
        "--workers", type=positive_int, default=2, help="with --summary: processes reading sessions"
    )
    p.add_argument(
        "--from",
        dest="date_from",
        type=_date,
        metavar="YYYY-MM-DD",
        help="with --summary: sessions begun on or after this day (local time)",
    )
    p.add_argument(
        "--to",
        dest="date_to",
        type=_date,
        metavar="YYYY-MM-DD",
        help="with --summary: sessions begun on or before this day (local time)",
    )
    p.add_argument("--room", help="with --summary: only this room's sessions (as logged with --room)")
    p.add_argument("--operator", help="with --summary: only this operator's sessions")
    p.add_argument("--level", help="with --summary: only this vertebral level, e.g. L1")
    p.set_defaults(run=_run_audit)


SUMMARY_ONLY = ("csv", "date_from", "date_to", "room", "operator", "level")  # options of --summary alone


def _date(text: str):
    import argparse
    import datetime

    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a day as YYYY-MM-DD") from None


def _run_audit(args) -> int:
    import json

    from monitor.audit import audit_exit_code, audit_json, text_report
    from monitor.io.store import SessionStore

    if args.summary:
        return _run_summary(args)
    given = [name for name in SUMMARY_ONLY if getattr(args, name) is not None]
    if given:
        flags = ", ".join("--" + {"date_from": "from", "date_to": "to"}.get(n, n) for n in given)
        raise MonitorError(f"{flags}: only with --summary (one session is audited whole)")
    store = SessionStore.open(args.session)
    try:
        report = audit_json(store)
        if args.html:
            from monitor.report import html_report

            _write_html(args.html, html_report(store, report))
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

    from monitor.audit import SUMMARY_COLUMNS, SummaryFilter, find_sessions, summarize

    if args.date_from and args.date_to and args.date_from > args.date_to:
        raise MonitorError(f"--from {args.date_from} is after --to {args.date_to}")
    for name in ("room", "operator", "level"):
        if getattr(args, name) is not None and not getattr(args, name).strip():
            raise MonitorError(f"--{name}: empty (for sessions not told one, give 'not recorded')")
    only = SummaryFilter(args.date_from, args.date_to, args.room, args.operator, args.level)
    started = time.monotonic()
    unlisted: list[dict] = []
    folders = find_sessions(args.session, unlisted)
    if not folders:
        raise MonitorError(f"{args.session}: no session found under it")
    print(f"reading {len(folders)} session(s)", file=sys.stderr)
    table = summarize(
        folders,
        args.workers,
        progress=lambda n: print(f"  {n} read", file=sys.stderr),
        cache=_summary_cache(args.session),
        only=only,
    )
    table["unreadable"] = unlisted + table["unreadable"]  # folders not listed: said first
    if args.html:
        from monitor.report import summary_html

        _write_html(args.html, summary_html(table, _leak_reports(table["leaked"], args.html)))
    if args.csv:
        try:
            with open(args.csv, "w", newline="") as f:
                writer = csv.DictWriter(f, SUMMARY_COLUMNS)
                writer.writeheader()
                writer.writerows(table["rows"])
        except OSError as e:
            raise MonitorError(f"{args.csv}: cannot write the table ({e.strerror})") from None
    if args.json:
        print(json.dumps(table, indent=1))
    else:
        _print_summary(table)
    print(
        f"{len(folders)} session(s) ({table['read']} read, {table['from_close']} from the digests"
        " written at their close, the rest from the cache"
        + (f"; {table['matched']} {table['filter']}" if table["filter"] else "")
        + ") "
        f"in {time.monotonic() - started:.1f} s"
        + (f", {len(table['unreadable'])} unreadable" if table["unreadable"] else ""),
        file=sys.stderr,
    )
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr)
    return summary_exit_code(table)


def summary_exit_code(table: dict) -> int:
    """As one session's audit says it (monitor.audit.audit_exit_code), for the worst session: 3
    when a log could not be read, fails its integrity check or is incomplete, 4 when a level was NOT
    MONITORED, 5 when a recording was not sent to its end, else 0. (It said 0 with sessions
    unreadable: a script checking the exit status saw nothing wrong.)"""
    if table["unreadable"] or table["untrusted"] or table.get("incomplete"):
        return 3
    if table["not_monitored"]:
        return 4
    return 5 if table.get("stopped_early") else 0


def _print_summary(table: dict) -> None:
    """The summary for people: what QA must look at first, then the table."""
    from monitor.audit import SUMMARY_COLUMNS, stopped_early_phrase

    for bad in table["untrusted"]:  # first: what QA must look at
        print(f"UNTRUSTED: {bad['folder']}: " + "; ".join(bad["problems"]))
    if table["filter"]:
        print(f"sessions {table['filter']}")
    for miss in table["not_monitored"]:
        reasons = "; ".join(miss["reasons"])
        print(f"NOT MONITORED: {miss['folder']} level {miss['level']}: {reasons}")
    untrusted = {bad["folder"] for bad in table["untrusted"]}  # (said above, whole or not)
    for folder in table.get("incomplete", []):
        if folder not in untrusted:
            print(f"INCOMPLETE: {folder}: the log says it is not whole (audit it for why)")
    for cut in table.get("stopped_early", []):
        print(f"STOPPED EARLY: {cut['folder']}: {stopped_early_phrase(cut['unsent'])}")
    for leak in table["leaked"]:
        possible = leak["possible_leaks"]
        print(
            f"LEAK: {leak['folder']} level {leak['level']} ({leak['operator']}): "
            f"{leak['leaks']} leak alarm(s)" + (f", {possible} possible (medium)" if possible else "")
        )
    widths = {c: max([len(c), *(len(_cell(r[c])) for r in table["rows"])]) for c in SUMMARY_COLUMNS}
    print("  ".join(c.rjust(widths[c]) for c in SUMMARY_COLUMNS))
    for row in table["rows"]:
        print("  ".join(_cell(row[c]).rjust(widths[c]) for c in SUMMARY_COLUMNS))
    if not table["rows"]:
        print("no level matches" + (f" ({table['filter']})" if table["filter"] else ""))
    for bad in table["unreadable"]:
        print(f"unreadable: {bad['error']}")


def _leak_reports(leaked: list[dict], summary: Path) -> dict[str, str]:
    """Each leaked session's own report, written beside the summary page (in a folder named
    after it) for the page to link to: session folder -> link relative to the page."""
    from monitor.audit import audit_json
    from monitor.io.store import SessionStore
    from monitor.report import html_report

    folders = list(dict.fromkeys(leak["folder"] for leak in leaked))
    links: dict[str, str] = {}
    if folders:
        print(f"writing the reports of {len(folders)} session(s) with a leak", file=sys.stderr)
    for i, folder in enumerate(folders):
        name = f"{summary.stem}-sessions/{i:04d}-{Path(folder).name}.html"
        try:
            store = SessionStore.open(folder)
        except MonitorError as e:  # it changed since the summary read it: said, not linked
            print(f"  {folder}: no report ({e})", file=sys.stderr)
            continue
        try:
            _write_html(summary.parent / name, html_report(store, audit_json(store)))
        finally:
            store.close()
        links[folder] = name
    return links


def _write_html(path: Path, page: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise MonitorError(f"{path}: cannot write the report ({e.strerror})") from None


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
    p.add_argument(
        "--sr",
        action="store_true",
        help="also write report.dcm: the measurements and alarms per level as a DICOM Structured"
        " Report (TID 1500) referencing the images, for the PACS",
    )
    p.set_defaults(run=_run_export)


def _run_export(args) -> int:
    from monitor.io.export import export_session

    export_session(args.session, args.out, args.deidentify, sr=args.sr)
    return 0


def add_reanalyze(sub) -> None:
    p = sub.add_parser(
        "reanalyze",
        help="re-run the current vision over every logged session in a directory (on Dask), and say"
        " which would be judged differently",
        description="Re-run every session logged under DIR with this version's vision (each with its"
        " room's calibration settings and the operator's input as logged) on a Dask cluster, and write"
        " a per-session comparison with what was logged: alarms added, lost or moved, volume and"
        " closest distance before and after. The report is the same whatever the number of workers."
        " Exit status 3 when a session could not be re-run.",
    )
    p.add_argument("archive", type=Path, metavar="DIR", help="a directory of session directories (any depth)")
    p.add_argument("--out", type=Path, required=True, metavar="REPORT", help="the comparison, as JSON")
    p.add_argument(
        "--workers",
        type=positive_int,
        help="worker processes of the local Dask cluster, one session each at a time (default: 2)",
    )
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="a running Dask scheduler to use instead of a local cluster (its workers must have this"
        " monitor installed and read DIR at the same path)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_reanalyze)


def _run_reanalyze(args) -> int:
    from monitor.reanalyze import run, text_report

    if args.scheduler and args.workers:
        raise MonitorError(
            "--workers sizes the local cluster; with --scheduler the cluster's own workers run"
        )
    if not args.archive.is_dir():
        raise MonitorError(f"{args.archive}: not a directory")
    report = run(args.archive, args.out, args.workers or 2, args.scheduler, progress=not args.quiet,
                 say=lambda m: print(m, file=sys.stderr))  # fmt: skip
    print(text_report(report))
    print(f"report: {args.out}")
    return 3 if report["summary"]["unreadable"] else 0  # a session not re-run is not vouched for
