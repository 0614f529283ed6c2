"""The IEC 60601-1-8 alarm sounds, measured from the WAV files `monitor sounds` writes."""

from __future__ import annotations

import pytest

from monitor.sounds import (
    FUNDAMENTAL_HZ,
    HIGH,
    MIN_HARMONICS_IN_BAND,
    RANGES,
    RISE_FRACTION,
    AlarmSound,
    burst,
    measure,
    read_wav,
)
from tests.conftest import monitor_cli


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("sounds")
    done = monitor_cli("sounds", out)
    assert done.returncode == 0, done.stderr
    return {name: measure(*read_wav(out / f"{name}.wav")) for name in ("high", "medium")}


@pytest.mark.parametrize("name", ["high", "medium"])
def test_each_burst_is_within_the_standards_ranges(measured, name):
    m, limits = measured[name], RANGES[name]
    assert m["pulses"] == limits["pulses"][0]
    low, high = limits["pulse_s"]
    assert all(low <= td <= high for td in m["pulse_s"]), m["pulse_s"]
    assert all(RISE_FRACTION[0] <= r <= RISE_FRACTION[1] for r in m["rise_fraction"]), m["rise_fraction"]
    assert FUNDAMENTAL_HZ[0] <= m["fundamental_hz"] <= FUNDAMENTAL_HZ[1]
    assert m["harmonics_in_band"] >= MIN_HARMONICS_IN_BAND
    assert m["amplitude_spread_db"] <= 10.0
    assert limits["interburst_s"][0] <= m["trailing_silence_s"] <= limits["interburst_s"][1]
    low, high = limits["spacing_s"]
    if name == "medium":
        assert all(low <= ts <= high for ts in m["spacing_s"])


def test_the_high_burst_is_three_plus_two_twice(measured):
    """Pulses 1-2-3 and 4-5 spaced ts; 3 to 4 is 2 ts + td; 5 to 6 is 350-1300 ms."""
    m = measured["high"]
    ts, td = m["spacing_s"][0], m["pulse_s"][0]
    low, high = RANGES["high"]["spacing_s"]
    assert low <= ts <= high
    gaps = m["spacing_s"]
    for i in (0, 1, 3, 5, 6, 8):
        assert gaps[i] == pytest.approx(ts, abs=0.002)
    for i in (2, 7):
        assert gaps[i] == pytest.approx(2 * ts + td, abs=0.003)
    assert RANGES["high"]["pause_after_five_s"][0] <= gaps[4] <= RANGES["high"]["pause_after_five_s"][1]


def test_the_measurement_reads_back_known_timings():
    """A burst of known timings is measured to within 2 ms, so the checks above can fail: a
    high burst with 300 ms spacings is read as 300 ms, outside 50-125 ms."""
    odd = AlarmSound("odd", 4, 0.090, 0.300, 700.0, 3.0)
    m = measure(burst(odd), 44_100)
    assert m["pulses"] == 4
    assert m["pulse_s"] == pytest.approx([0.090] * 4, abs=0.002)
    assert m["spacing_s"] == pytest.approx([0.300] * 3, abs=0.002)
    assert m["fundamental_hz"] == pytest.approx(700.0, abs=2.0)
    assert m["trailing_silence_s"] == pytest.approx(3.0, abs=0.02)
    assert not RANGES["high"]["spacing_s"][0] <= m["spacing_s"][0] <= RANGES["high"]["spacing_s"][1]
    assert HIGH.gaps()[2] == pytest.approx(2 * HIGH.spacing_s + HIGH.pulse_s)


def test_a_sound_device_that_fails_while_playing_is_said_not_silent():
    from monitor.sounds import AlarmPlayer

    def unplugged(samples, rate):
        raise OSError("device unavailable")

    player = AlarmPlayer(output=unplugged)
    assert player.problem is None
    player.sound("high", 0.0)  # no exception into the viewer's timer
    assert "device unavailable" in player.problem
    player.sound(None, 1.0)  # and stopping it is safe too
