"""Tabulate how the reader handles every DICOM test file shipped with pydicom
and pydicom-data: decoded (first and last frame), or refused, and why.

Run: .venv/bin/python scripts/dicom_corpus_report.py [-v]
"""

import collections
import logging
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_dicom_io import PUBLIC_FILES  # noqa: E402

from monitor.errors import RecordingError  # noqa: E402
from monitor.io.dicom import open_recording  # noqa: E402

warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
outcomes: collections.Counter = collections.Counter()
syntaxes: collections.Counter = collections.Counter()
multiframe = []
for path in PUBLIC_FILES:
    try:
        with open_recording(path) as rec:
            rec.frame(0)
            rec.frame(len(rec) - 1)
        outcomes["decoded"] += 1
        syntaxes[rec.info.transfer_syntax] += 1
        if len(rec) > 1:
            multiframe.append(f"{Path(path).name} ({len(rec)} frames)")
    except RecordingError as e:
        reason = str(e).split(": ", 1)[1]
        outcomes["refused: " + reason.split("(")[0].strip()[:50]] += 1
        if "-v" in sys.argv:
            print(f"{Path(path).name}: {reason}")
print(f"{len(PUBLIC_FILES)} files")
for outcome, n in outcomes.most_common():
    print(f"{n:5d}  {outcome}")
print("decoded by transfer syntax:", dict(syntaxes))
print("multi-frame decoded:", ", ".join(multiframe))
