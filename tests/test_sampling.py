"""Sub-pixel sampling: exact bilinear and bicubic weights, whatever OpenCV build is installed.

OpenCV 4 rounds bilinear positions to 1/32 pixel, OpenCV 5 does not; the monitor's
measurements went with it (monitor.vision.sampling says why). These tests hold the
samplers to a float64 reference written out here, at positions a 1/32-pixel table
cannot represent, so they fail on either rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from monitor.vision.sampling import (
    BilinearImage,
    Border,
    Positions,
    sample_grid,
    sample_points,
    translate,
    translate_cubic,
)

PAD_MODES = {Border.CONSTANT: "constant", Border.REPLICATE: "edge", Border.REFLECT: "symmetric"}


def reference_bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray, border: Border, value=0.0):
    """Bilinear interpolation of the border-extended image, in float64, by its definition."""
    pad = 64
    kwargs = {"constant_values": value} if border == Border.CONSTANT else {}
    extended = np.pad(image.astype(np.float64), pad, mode=PAD_MODES[border], **kwargs)
    x, y = np.asarray(x, float) + pad, np.asarray(y, float) + pad
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    return (
        extended[y0, x0] * (1 - fx) * (1 - fy)
        + extended[y0, x0 + 1] * fx * (1 - fy)
        + extended[y0 + 1, x0] * (1 - fx) * fy
        + extended[y0 + 1, x0 + 1] * fx * fy
    )


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((37, 45)).astype(np.float32)


@pytest.mark.parametrize("border", list(Border))
def test_points_are_read_at_their_exact_position(image, border):
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-10, 55, 20000), rng.uniform(-10, 47, 20000)  # inside and well outside
    got = sample_points(image, x, y, border, value=0.7)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_bilinear(image, x, y, border, 0.7), atol=2e-6)


def test_a_ramp_is_read_to_a_hundredth_of_a_pixel():
    """A 1/32-pixel table reads x = 10.01 as 10.0 (and 10.02 as 10.03125)."""
    ramp = np.tile(np.arange(64, dtype=np.float32), (8, 1))
    x = np.array([10.01, 10.02, 20.5, 30.999])
    got = sample_points(ramp, x, np.full(4, 3.25))
    np.testing.assert_allclose(got, x, atol=1e-5)


def test_long_point_lists_and_any_shape_come_back_in_their_shape(image):
    """OpenCV's remap takes under 32767 per side: 100,000 points are folded and unfolded."""
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 44, (250, 400)), rng.uniform(0, 36, (250, 400))
    got = sample_points(image, x, y)
    assert got.shape == (250, 400)
    np.testing.assert_allclose(got, reference_bilinear(image, x, y, Border.CONSTANT), atol=2e-6)
    assert sample_points(image, np.zeros(0), np.zeros(0)).shape == (0,)


def test_channels_are_sampled_together_and_alike():
    rng = np.random.default_rng(6)
    layers = rng.standard_normal((20, 30, 3)).astype(np.float32)
    x, y = rng.uniform(0, 29, 500), rng.uniform(0, 19, 500)
    got = sample_points(layers, x, y, Border.REPLICATE)
    assert got.shape == (500, 3)
    for c in range(3):
        np.testing.assert_allclose(
            got[:, c], reference_bilinear(layers[..., c], x, y, Border.REPLICATE), atol=2e-6
        )


@pytest.mark.parametrize("border", [Border.CONSTANT, Border.REPLICATE])
def test_a_separable_grid_is_the_same_as_its_points(image, border):
    xs, ys = np.linspace(-4.3, 50.2, 61), np.linspace(-2.1, 40.9, 23)
    gx, gy = np.meshgrid(xs, ys)
    got = sample_grid(image, xs, ys, border, value=-1.5)
    assert got.shape == (23, 61)
    np.testing.assert_allclose(got, reference_bilinear(image, gx, gy, border, -1.5), atol=2e-6)


def test_a_grid_refuses_a_border_it_cannot_do(image):
    with pytest.raises(ValueError, match="REFLECT"):
        sample_grid(image, np.arange(3.0), np.arange(3.0), Border.REFLECT)


def test_translation_moves_the_content_by_the_given_amount(image):
    dx, dy = 2.37, -1.61
    gx, gy = np.meshgrid(np.arange(45), np.arange(37))
    np.testing.assert_allclose(
        translate(image, dx, dy), reference_bilinear(image, gx - dx, gy - dy, Border.REPLICATE), atol=2e-6
    )
    layers = np.stack([image, 2 * image], axis=-1)
    np.testing.assert_allclose(translate(layers, dx, dy)[..., 1], 2 * translate(image, dx, dy), atol=2e-6)


def keys_cubic(d: np.ndarray, a: float = -0.75) -> np.ndarray:
    d = np.abs(d)
    return np.where(
        d <= 1,
        (a + 2) * d**3 - (a + 3) * d**2 + 1,
        np.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0.0),
    )


def test_cubic_translation_is_the_keys_kernel_at_the_exact_offset(image):
    """Direct sum over the 4x4 neighbourhood with Keys' kernel (a = -0.75), edges repeated."""
    dx, dy = 1.013, -2.71  # fractions a 1/32 table would round
    got = translate_cubic(image, dx, dy)
    h, w = image.shape
    want = np.zeros((h, w))
    for r in range(h):
        sy = r - dy
        rows = np.floor(sy) + np.arange(-1, 3)
        wy = keys_cubic(sy - rows)
        for c in range(w):
            sx = c - dx
            cols = np.floor(sx) + np.arange(-1, 3)
            wx = keys_cubic(sx - cols)
            block = image[np.clip(rows, 0, h - 1).astype(int)][:, np.clip(cols, 0, w - 1).astype(int)]
            want[r, c] = wy @ block @ wx
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(translate_cubic(image, 0.0, 3.0)[3:], image[:-3])


@pytest.mark.parametrize("border", [Border.CONSTANT, Border.REPLICATE])
def test_a_prepared_image_reads_prepared_positions_like_the_reference(image, border):
    """The distortion correction's path: positions split once, each frame prepared once."""
    rng = np.random.default_rng(8)
    x, y = rng.uniform(-6, 50, (60, 70)), rng.uniform(-6, 42, (60, 70))
    got = BilinearImage(image, border, value=0.25).at(Positions.of(x, y))
    assert got.shape == (60, 70)
    np.testing.assert_allclose(got, reference_bilinear(image, x, y, border, 0.25), atol=2e-6)


def test_a_runaway_shift_reads_border_only_and_a_nan_shift_is_refused(image):
    """Registration can diverge: a shift of a million pixels must not pad a million pixels."""
    far = translate(image, 1e6, -3e6, Border.REPLICATE)
    assert far.shape == image.shape and np.all(far == image[-1, 0])  # the bottom-left corner, repeated
    assert np.all(translate(image, -1e6, 0.5, Border.CONSTANT) == 0)
    with pytest.raises(ValueError, match="not finite"):
        translate(image, float("nan"), 0.0)


def test_a_single_channel_stack_keeps_its_axis(image):
    x, y = np.array([1.5, 7.25]), np.array([2.0, 3.75])
    got = sample_points(image[..., None], x, y)
    assert got.shape == (2, 1)
    np.testing.assert_allclose(got[:, 0], sample_points(image, x, y))
