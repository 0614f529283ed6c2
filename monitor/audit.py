"""QA audit of a logged session.

``audit_json`` is the stable contract QA tools read (documented in the
README): per level, the volume injected, every alarm raised, and per frame the
distance to the posterior wall and the volume so far. Frame numbers are the
0-based frame indices of the recording.
"""

from __future__ import annotations

from monitor.io.store import SessionStore


def audit_json(store: SessionStore) -> dict:
    meta = store.meta()
    results = store.results()
    frames: dict[int, dict] = {}
    alarms = []
    for r in results:  # in arrival order: for one frame index, AP after lateral
        row = frames.setdefault(r["frame"], {"frame": r["frame"], "distance_mm": None, "volume_ml": None})
        if r["plane"] == "lateral" and r["distance_mm"] is not None:
            row["distance_mm"] = r["distance_mm"]
        if r["volume_ml"] is not None:
            row["volume_ml"] = r["volume_ml"]
        for a in r["alarms"]:
            alarms.append(
                {k: a.get(k) for k in ("kind", "priority", "frame", "plane", "site", "distance_mm")}
                | {"time_s": r["acq_time"]}
            )
    ordered = [frames[i] for i in sorted(frames)]
    volumes = [f["volume_ml"] for f in ordered if f["volume_ml"] is not None]
    distances = [f["distance_mm"] for f in ordered if f["distance_mm"] is not None]
    summary = meta.get("summary") or {}
    return {
        "session": meta.get("session"),
        "complete": summary.get("complete", False),
        "problems": summary.get("problems", ["session still open or its logger died"]),
        "levels": [
            {
                "level": meta.get("level"),
                "volume_ml": volumes[-1] if volumes else None,
                "min_distance_mm": min(distances) if distances else None,
                "alarms": alarms,
                "frames": ordered,
            }
        ],
    }
