"""``monitor sounds``: the IEC 60601-1-8 alarm sounds as WAV files (``monitor.sounds``)."""

from __future__ import annotations

import sys
from pathlib import Path

from monitor.errors import MonitorError


def add_sounds(sub) -> None:
    p = sub.add_parser(
        "sounds",
        help="write the high- and medium-priority alarm sounds (IEC 60601-1-8 bursts) as WAV files",
        description="Write high.wav and medium.wav into OUTDIR: one burst each, then its interburst"
        " silence, 16-bit mono at 44.1 kHz; and print what each measures against the standard's"
        " ranges.",
    )
    p.add_argument("outdir", type=Path, help="folder to write high.wav and medium.wav into")
    p.set_defaults(run=_run_sounds)


def _run_sounds(args) -> int:
    from monitor.sounds import RANGES, SOUNDS, measure, read_wav, write_sounds

    if args.outdir.exists() and not args.outdir.is_dir():
        raise MonitorError(f"{args.outdir}: exists and is not a directory")
    for sound, path in zip(SOUNDS, write_sounds(args.outdir), strict=True):
        m = measure(*read_wav(path))
        limits = RANGES[sound.name]
        print(
            f"wrote {path}: {m['pulses']} pulses (standard {limits['pulses'][0]}), td"
            f" {1000 * min(m['pulse_s']):.0f}-{1000 * max(m['pulse_s']):.0f} ms"
            f" ({1000 * limits['pulse_s'][0]:.0f}-{1000 * limits['pulse_s'][1]:.0f}), ts"
            f" {1000 * min(m['spacing_s']):.0f} ms ({1000 * limits['spacing_s'][0]:.0f}-"
            f"{1000 * limits['spacing_s'][1]:.0f}), rise {100 * max(m['rise_fraction']):.0f} % of td"
            f" (10-20), f0 {m['fundamental_hz']:.0f} Hz (150-1000) with {m['harmonics_in_band']}"
            f" harmonics in 300-4000 Hz (4 or more), then {m['trailing_silence_s']:.1f} s of silence"
            f" ({limits['interburst_s'][0]:g}-{limits['interburst_s'][1]:g})"
        )
    print("no sound device is used: play the files to hear them", file=sys.stderr)
    return 0
