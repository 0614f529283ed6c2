"""The accuracy benchmark's two volume estimates against the truth: the image's darkness (the
intensity estimate, which rests on the physics the analyzer assumes) and the two views' shape
(the geometric, biplane estimate, which does not), each frame of each case; and the volume the
monitor reports from them (:func:`monitor.vision.biplane.fused_volume`).

``monitor bench accuracy --volume-plot PNG`` writes the plot; the table beside the benchmark's
report gives each estimate's reading of the truth over the same frames. Both show where the
volume error comes from: an estimate that reads low everywhere (the darkness in a room with
more scatter or a harder beam than assumed), or one that scatters (the shape on small boluses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_TRUTH_ML = 0.5  # the frames counted, as the benchmark's volume error counts them


def estimate_pairs(cases: list[dict]) -> dict[str, list[tuple[float, float, str]]]:
    """Per estimate ("darkness", "shape", "reported"): (truth, estimate, anatomy) in mL for
    every frame of every case whose injected truth is MIN_TRUTH_ML or more and which has that
    estimate; ``cases`` as :func:`monitor.accuracy.evaluate_case` returns them (frame keys int,
    or str after a JSON round trip)."""
    pairs: dict[str, list[tuple[float, float, str]]] = {"darkness": [], "shape": [], "reported": []}
    for c in cases:
        anatomy = c["config"].get("anatomy") or "geometric"
        injected = {int(f): v for f, v in c["truth"]["injected"].items()}
        reported = {int(f): v for f, v in c["volume"].items()}
        for f, (darkness, shape) in ((int(f), e) for f, e in c.get("volume_estimates", {}).items()):
            truth = injected.get(f)
            if truth is None or truth < MIN_TRUTH_ML:
                continue
            pairs["darkness"].append((truth, darkness, anatomy))
            if shape is not None:
                pairs["shape"].append((truth, shape, anatomy))
            if reported.get(f) is not None:
                pairs["reported"].append((truth, reported[f], anatomy))
    return pairs


def estimates_table(cases: list[dict]) -> str:
    """Each estimate's frames, median reading of the truth (estimate / truth, 16th-84th
    percentile) and median error, split by anatomy: the text beside the plot."""
    pairs = estimate_pairs(cases)
    lines = [
        f"volume estimates against the truth (frames >= {MIN_TRUTH_ML} mL; no syringe anchoring)",
        f"  {'estimate':10} {'anatomy':10} {'frames':>7} {'reads x truth (16-84th)':>26} {'median err':>11}",
    ]
    for name, rows in pairs.items():
        for anatomy in ("all", "geometric", "ct"):
            chosen = [(t, e) for t, e, a in rows if anatomy in ("all", a)]
            if not chosen:
                continue
            ratio = np.array([e / t for t, e in chosen])
            lo, mid, hi = np.percentile(ratio, [16, 50, 84])
            err = float(np.median(np.abs(ratio - 1.0)) * 100)
            spread = f"{mid:.2f} ({lo:.2f}-{hi:.2f})"
            lines.append(f"  {name:10} {anatomy:10} {len(chosen):7d} {spread:>26} {err:9.1f} %")
    return "\n".join(lines)


def plot_estimates(cases: list[dict], path: Path, title: str) -> None:
    """Write a PNG of the three estimates against the truth, one panel each, log-log, the
    geometric and CT anatomies in their own colours, the line of agreement and +-10 % drawn."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the benchmark runs headless
    import matplotlib.pyplot as plt

    pairs = estimate_pairs(cases)
    names = {
        "darkness": "intensity (the image's darkness)",
        "shape": "geometric (biplane shape)",
        "reported": "reported (fused)",
    }
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2), sharex=True, sharey=True)
    everything = [v for rows in pairs.values() for t, e, _ in rows for v in (t, e) if v > 0]
    low = max(0.05, min(everything, default=0.5) * 0.8)
    high = max(everything, default=10.0) * 1.2
    line = np.array([low, high])
    for ax, (name, rows) in zip(axes, pairs.items(), strict=True):
        for anatomy, colour in (("geometric", "tab:blue"), ("ct", "tab:orange")):
            chosen = np.array([(t, e) for t, e, a in rows if a == anatomy and e > 0]).reshape(-1, 2)
            label = f"{anatomy} ({len(chosen)})"
            ax.scatter(chosen[:, 0], chosen[:, 1], s=6, alpha=0.45, color=colour, label=label)
        ax.plot(line, line, color="black", lw=1)
        ax.fill_between(line, 0.9 * line, 1.1 * line, color="grey", alpha=0.25, lw=0)
        ratio = np.array([e / t for t, e, _ in rows]) if rows else np.array([np.nan])
        ax.set_title(f"{names[name]}\nmedian x{np.median(ratio):.2f} of the truth, {len(rows)} frames")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("injected volume, truth (mL)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("estimated volume (mL)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
