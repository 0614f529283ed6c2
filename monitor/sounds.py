"""The auditory alarm signals of IEC 60601-1-8, made with numpy and written as WAV files.

A high-priority alarm is a burst of ten pulses, 3 + 2 then 3 + 2; a medium-priority alarm a
burst of three. Each pulse is a tone with a fundamental in 150-1000 Hz and at least four
harmonics in 300-4000 Hz, shaped with linear rise and fall ramps. The timings used, and the
ranges of the standard's Tables 3 and 4 that :func:`measure` checks them against:

| | high | medium | standard's range (high / medium) |
|---|---|---|---|
| pulses in a burst | 10 | 3 | 10 / 3 |
| effective pulse duration td | 150 ms | 200 ms | 75-200 ms / 125-250 ms |
| pulse spacing ts | 100 ms | 200 ms | 50-125 ms / 125-250 ms |
| rise and fall time | 15 % of td | 15 % of td | rise 10-20 % of td; fall <= ts |
| between pulses 3 and 4 (and 8 and 9) | 2 ts + td | | 2 ts + td |
| between pulses 5 and 6 | 600 ms | | 350-1300 ms |
| interburst interval | 5 s | 10 s | 2.5-15 s / 2.5-30 s |
| fundamental | 523 Hz | 440 Hz | 150-1000 Hz |

Durations are measured on the envelope at half amplitude (td: from the rise's half-amplitude
point to the fall's; ts: from one pulse's fall to the next's rise); rise time from 10 % to
90 %. The numbers of the standard are as we read IEC 60601-1-8:2006+A1:2012+A2:2020; check
them against your copy before relying on this module for conformity.

``monitor sounds OUTDIR`` writes high.wav and medium.wav: one burst each, followed by the
silence of its interburst interval, so that a player looping the file gives the signal.
"""

from __future__ import annotations

import contextlib
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 44_100  # samples per second, 16-bit mono


@dataclass(frozen=True)
class AlarmSound:
    """One priority's auditory alarm signal (times in seconds)."""

    name: str
    pulses: int
    pulse_s: float  # effective pulse duration td, half amplitude to half amplitude
    spacing_s: float  # pulse spacing ts, half amplitude to half amplitude
    fundamental_hz: float
    interburst_s: float  # from the end of one burst to the start of the next
    pause_after_five_s: float = 0.0  # high priority: between pulses 5 and 6
    rise_fraction: float = 0.15  # rise and fall times, as a share of td (10 % to 90 %)
    harmonics: int = 4  # above the fundamental, each half the amplitude of the one below

    @property
    def ramp_s(self) -> float:
        """The whole rise (and fall) ramp: linear, so its 10 %-90 % part is 80 % of it."""
        return self.rise_fraction * self.pulse_s / 0.8

    def gaps(self) -> list[float]:
        """The spacing after each pulse but the last, half amplitude to half amplitude."""
        ts, td = self.spacing_s, self.pulse_s
        if self.pulses != 10:
            return [ts] * (self.pulses - 1)
        group = [ts, ts, 2 * ts + td, ts]  # 3 + 2
        return group + [self.pause_after_five_s] + group


HIGH = AlarmSound("high", 10, 0.150, 0.100, 523.25, 5.0, pause_after_five_s=0.600)
MEDIUM = AlarmSound("medium", 3, 0.200, 0.200, 440.0, 10.0)
SOUNDS = (HIGH, MEDIUM)

# The standard's ranges (Tables 3 and 4), as checked by measure(): (low, high) inclusive
RANGES = {
    "high": {"pulses": (10, 10), "pulse_s": (0.075, 0.200), "spacing_s": (0.050, 0.125),
             "pause_after_five_s": (0.350, 1.300), "interburst_s": (2.5, 15.0)},
    "medium": {"pulses": (3, 3), "pulse_s": (0.125, 0.250), "spacing_s": (0.125, 0.250),
               "interburst_s": (2.5, 30.0)},
}  # fmt: skip
FUNDAMENTAL_HZ = (150.0, 1000.0)
HARMONIC_BAND_HZ = (300.0, 4000.0)
MIN_HARMONICS_IN_BAND = 4
RISE_FRACTION = (0.10, 0.20)


def pulse(sound: AlarmSound, rate: int = SAMPLE_RATE) -> np.ndarray:
    """One pulse, float32 in [-1, 1]: the tone with linear ramps whose half-amplitude points
    are ``pulse_s`` apart."""
    ramp = sound.ramp_s
    total = sound.pulse_s + ramp  # half amplitude is half way up each ramp
    t = np.arange(int(round(total * rate))) / rate
    f0 = sound.fundamental_hz
    tone = sum(0.5**k * np.sin(2 * np.pi * (k + 1) * f0 * t) for k in range(sound.harmonics + 1))
    envelope = np.clip(np.minimum(t, total - t) / ramp, 0.0, 1.0)
    wave_ = tone * envelope
    return (wave_ / np.max(np.abs(wave_))).astype(np.float32)


def burst(sound: AlarmSound, rate: int = SAMPLE_RATE, with_interburst: bool = True) -> np.ndarray:
    """The pulses of one burst with their spacings, then (by default) the interburst silence."""
    one = pulse(sound, rate)
    ramp = sound.ramp_s
    parts = [one]
    for gap in sound.gaps():
        # spacing is half amplitude to half amplitude: the ramps' halves lie inside it
        parts += [np.zeros(int(round((gap - ramp) * rate)), np.float32), one]
    if with_interburst:
        parts.append(np.zeros(int(round(sound.interburst_s * rate)), np.float32))
    return np.concatenate(parts)


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """``samples`` (float in [-1, 1]) as 16-bit mono PCM at 80 % of full scale."""
    pcm = np.round(samples * 0.8 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def write_sounds(folder: Path) -> list[Path]:
    """high.wav and medium.wav into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_wav(folder / f"{s.name}.wav", burst(s)) for s in SOUNDS]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit mono WAV as float samples in [-1, 1], and its rate."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono")
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return data.astype(np.float64) / 32767, rate


def measure(samples: np.ndarray, rate: int) -> dict:
    """What a burst measures, from its samples alone: the pulses found on the envelope, their
    effective durations, the spacings, rise times (10-90 %) as a share of td, the amplitude
    spread (dB), the trailing silence, the fundamental and the harmonics in 300-4000 Hz."""
    from scipy.signal import hilbert

    # The envelope: the analytic signal's magnitude, averaged over two periods of the lowest
    # fundamental allowed (it ripples within a period of a tone with harmonics). A centred
    # average of a linear ramp longer than it keeps the ramp's half-amplitude point.
    window = int(2 * rate / FUNDAMENTAL_HZ[0])
    envelope = np.convolve(np.abs(hilbert(samples)), np.ones(window) / window, mode="same")
    peak = envelope.max()
    # a pulse begins where the envelope rises through half its peak and ends where it falls
    # back through it; a ripple under 10 % of the peak either side does not end it
    starts, ends, inside = [], [], False
    for i in np.flatnonzero(np.diff((envelope >= 0.5 * peak).astype(np.int8))) + 1:
        rising = envelope[i] >= 0.5 * peak
        if rising and not inside and (not ends or envelope[ends[-1] : i].min() < 0.4 * peak):
            starts.append(i)
            inside = True
        elif rising and not inside:  # the dip was a ripple: the pulse goes on
            ends.pop()
            inside = True
        elif not rising and inside:
            ends.append(i)
            inside = False
    pulses = [(s, e) for s, e in zip(starts, ends, strict=False)]
    durations = [(e - s) / rate for s, e in pulses]
    spacings = [(pulses[i + 1][0] - pulses[i][1]) / rate for i in range(len(pulses) - 1)]
    rises = []
    for s, e in pulses:
        top = envelope[s:e].max()
        quiet = np.flatnonzero(envelope[:s] < 0.1 * top)  # the rise starts after the last quiet sample
        rise = envelope[(quiet[-1] if quiet.size else 0) : e]
        t10, t90 = np.argmax(rise >= 0.1 * top), np.argmax(rise >= 0.9 * top)
        rises.append((t90 - t10) / (e - s))
    levels = [20 * np.log10(envelope[s:e].max()) for s, e in pulses]
    s, e = pulses[0]
    segment = samples[s:e] * np.hanning(e - s)
    spectrum = np.abs(np.fft.rfft(segment, n=8 * len(segment)))
    freqs = np.fft.rfftfreq(8 * len(segment), 1 / rate)
    f0 = float(freqs[np.argmax(spectrum * (freqs >= FUNDAMENTAL_HZ[0] * 0.5))])
    band = [
        k * f0
        for k in range(2, 40)
        if HARMONIC_BAND_HZ[0] <= k * f0 <= HARMONIC_BAND_HZ[1]
        and spectrum[np.argmin(np.abs(freqs - k * f0))] > 0.01 * spectrum.max()
    ]
    return {
        "pulses": len(pulses),
        "pulse_s": durations,
        "spacing_s": spacings,
        "rise_fraction": rises,
        "amplitude_spread_db": float(max(levels) - min(levels)),
        "trailing_silence_s": (len(samples) - pulses[-1][1]) / rate,
        "fundamental_hz": f0,
        "harmonics_in_band": len(band),  # multiples of the fundamental (2 f0 and up) in 300-4000 Hz
    }


class AlarmPlayer:
    """The bursts played on the default sound output (sounddevice, PortAudio), each repeated
    after its interburst interval while its alarm sounds.

    ``problem`` says why nothing can be played (no PortAudio, no output device), or is None;
    the live view shows it, since an operator must know that the alarms are not heard.
    ``output`` (samples, rate) replaces the sound device (for tests that count what is played).
    """

    def __init__(self, output=None):
        self.problem: str | None = None
        self._play = output
        self._stop = lambda: None
        if output is None:
            self._open_device()
        self._bursts = {s.name: burst(s, with_interburst=False) for s in SOUNDS}
        self._interburst = {s.name: s.interburst_s for s in SOUNDS}
        self._playing: str | None = None
        self._next = 0.0  # monotonic time the next burst is due

    def _open_device(self) -> None:
        try:
            import sounddevice as sd
        except OSError as e:  # the PortAudio library itself is missing
            self.problem = f"no sound: the PortAudio library is missing ({e}); install libportaudio2"
            return
        try:
            device = sd.query_devices(kind="output")
        except Exception as e:  # sounddevice.PortAudioError: no output device
            self.problem = f"no sound output device ({e})"
            return
        self._play = lambda samples, rate: sd.play(samples, rate)
        self._stop = sd.stop
        self.name = str(device.get("name", "default output"))

    def sound(self, priority: str | None, now: float) -> None:
        """Called often (each display tick): ``priority`` "high" or "medium" while an alarm
        must be heard, None while none must (acknowledged, paused, ended, none)."""
        if priority not in self._bursts:
            if self._playing is not None:
                with contextlib.suppress(Exception):  # stopping a device that failed: nothing to stop
                    self._stop()
            self._playing = None
            return
        if self._play is None:
            return
        if priority != self._playing or now >= self._next:
            self._playing = priority
            self._next = now + self._interburst[priority]
            try:
                self._play(self._bursts[priority], SAMPLE_RATE)
            except Exception as e:  # a device unplugged or taken: said, never a silent "audio on"
                self.problem = f"the sound device failed ({type(e).__name__}: {e})"
                self._play = None
