"""Scenes cut from the shared data for the registration tests and ``benchmarks/registration.py``.

Shifts are imposed through the georeferencing: the pixels are copied untouched,
so the imposed misplacement is known exactly.
"""

from __future__ import annotations

from pathlib import Path

import rasterio
from affine import Affine
from rasterio.windows import Window

from tests.conftest import SENTINEL2, SHARED

VHR = SHARED / "spacenet_pan_ms"
#: A clear 10 m patch corner of the shared Sentinel-2 scene (fields and woods inland)
#: that lies on the 10, 20 and 60 m grids alike.
S2_PATCH = (598, 479)


def vhr_scene(folder: Path, shift=(0.0, 0.0), zero_cols: int = 0) -> str:
    """The shared pan/MS pair as a manifest in ``folder``.

    The MS georeferencing is moved by ``shift`` (row, col) MS pixels; the west
    ``zero_cols`` MS columns (and the pan columns under them) are set to 0,
    not declared nodata.
    """
    with rasterio.open(VHR / "ms1.tif") as ds:
        ms, profile = ds.read(), ds.profile
    with rasterio.open(VHR / "pan1.tif") as ds:
        pan, pan_profile = ds.read(), ds.profile
    ms[:, :, :zero_cols] = 0
    pan[:, :, :2 * zero_cols] = 0
    profile.update(driver="GTiff", transform=profile["transform"] @ Affine.translation(shift[1], shift[0]))
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(folder / "ms.tif", "w", **profile) as out:
        out.write(ms)
    with rasterio.open(folder / "pan.tif", "w", **pan_profile) as out:
        out.write(pan)
    (folder / "scene.toml").write_text(
        'reference = "pan"\n[groups.pan]\nfiles = ["pan.tif"]\nbands = ["pan"]\n'
        '[groups.ms]\nfiles = ["ms.tif"]\nbands = ["blue", "green", "red", "nir"]\n')
    return str(folder / "scene.toml")


def s2_patch(folder: Path, shift=(0.0, 0.0), corner=S2_PATCH, size: int = 120) -> Path:
    """A Sentinel-2 folder: a ``size`` px 10 m patch of the shared scene with its 20 m and 60 m bands.

    ``corner`` is the patch's top-left (row, col) on the 10 m grid; the 20 m
    bands' georeferencing is moved by ``shift`` (row, col) 20 m pixels.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(SENTINEL2 / "s2_B02.jp2") as ds:
        x, y = ds.transform @ (corner[1], corner[0])
    for band, res in (("B02", 10), ("B03", 10), ("B04", 10), ("B08", 10), ("B05", 20), ("B8A", 20),
                      ("B11", 20), ("B01", 60), ("B09", 60)):
        n = size * 10 // res
        with rasterio.open(SENTINEL2 / f"s2_{band}.jp2") as ds:
            c, r = ~ds.transform @ (x, y)
            assert float(c).is_integer() and float(r).is_integer(), "pick a patch corner on every grid"
            data, profile = ds.read(window=Window(int(c), int(r), n, n)), ds.profile
            t = ds.transform @ Affine.translation(int(c), int(r))
        if res == 20:
            t = t @ Affine.translation(shift[1], shift[0])
        profile.update(driver="GTiff", width=n, height=n, transform=t)
        with rasterio.open(folder / f"s2_{band}.tif", "w", **profile) as out:
            out.write(data)
    return folder
