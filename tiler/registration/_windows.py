"""Where to measure: estimation windows that fit the scene, cloud screening and undeclared fill."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from affine import Affine

from tiler.scene import Scene

__all__ = ["WindowLayout", "window_layout", "CloudScreen", "detect_fill", "MIN_WINDOW", "CLOUD_MIN_REFLECTANCE",
           "CLOUD_FACTOR", "CLOUD_FRACTION", "FILL_MIN_FRACTION"]

#: Smallest estimation window side (pixels of the compared grid): below this a
#: window holds too few independent pixels for a sub-pixel estimate.
MIN_WINDOW = 16
#: Windows per side the layout aims for: a larger window is shrunk (not below
#: MIN_WINDOW_SHRUNK) until this many fit, for a robust fit of the field.
MIN_GRID = 4
MIN_WINDOW_SHRUNK = 32
#: Cloud screen without a product mask, on reflectance only: a pixel is cloud
#: when its red (else visible) reflectance exceeds both this level (the
#: brightness threshold above which Sen2Cor's cloud probability is 1 on B4:
#: Richter et al., Sentinel-2 MSI Level-2A ATBD, S2PAD-ATBD-0001, step 1) ...
CLOUD_MIN_REFLECTANCE = 0.25
#: ... and this factor times the lower quartile of the whole scene's
#: reflectance in that band (so that a bright scene, desert or snow, is not
#: all cloud); never a window compared with itself or with other windows.
CLOUD_FACTOR = 1.5
#: A window is rejected when more than this fraction of its pixels is cloud by
#: the reflectance test ...
CLOUD_FRACTION = 0.25
#: ... or by the product's mask, which also marks small clouds whose unmasked
#: margins still move with their parallax (cumulus in the shared Landsat-8
#: scene: windows with 2-25 % masked cloud are off by 0.5-2 pan pixels).
MASK_CLOUD_FRACTION = 0.02
#: Red band for the brightness test (nm), else any narrow visible band.
_RED_NM = (620.0, 700.0)
_VISIBLE_NM = (450.0, 700.0)
#: Side of the decimated whole-scene reads (scene statistics, fill detection).
_OVERVIEW = 512
#: Undeclared fill: a value shared by every band of a group that covers at
#: least this fraction of the scene in connected areas (or touches its edge)
#: is treated as nodata for registration.
FILL_MIN_FRACTION = 0.005


@dataclass(frozen=True)
class WindowLayout:
    """Estimation windows on the compared (coarser) grid.

    Attributes
    ----------
    size : int
        Window side, pixels of the compared grid.
    origins : list of tuple of int
        Top-left ``(row, col)`` of each window on that grid.
    shape : tuple of int
        Windows per column and per row of the layout.
    """

    size: int
    origins: list
    shape: tuple


def _axis(length: int, size: int, most: int) -> list[int]:
    # Stride at least size/2 (overlap at most 50 %), windows spread edge to edge.
    fit = 1 + (length - size) // max(size // 2, 1)
    n = max(1, min(most, fit))
    if n == 1:
        return [(length - size) // 2]
    return [int(round(k * (length - size) / (n - 1))) for k in range(n)]


def window_layout(height: int, width: int, *, window: int, grid: int) -> tuple[Optional[WindowLayout], str]:
    """Windows that fit a grid of ``height x width`` pixels.

    The window side is ``window``, at most half the shorter side, shrunk
    further (not below :data:`MIN_WINDOW_SHRUNK`) until :data:`MIN_GRID`
    windows fit per side, never below :data:`MIN_WINDOW`; along each axis as
    many windows as fit with at most 50 % overlap, at most ``grid``, spread
    from edge to edge.

    Parameters
    ----------
    height, width : int
        The compared grid, pixels.
    window : int
        Largest window side, pixels.
    grid : int
        Most windows per side.

    Returns
    -------
    layout : WindowLayout or None
        None when not even two :data:`MIN_WINDOW` windows fit along the
        shorter side.
    message : str
        Why there is no layout, or a note that the window was shrunk ("").
    """
    short = min(height, width)
    size = min(window, short // 2)
    while size > MIN_WINDOW_SHRUNK and 1 + (short - size) // (size // 2) < min(MIN_GRID, grid):
        size -= 1
    if size < MIN_WINDOW:
        return None, (f"the compared grid is {width} x {height} px, too small to register: windows of at least "
                      f"{MIN_WINDOW} px must fit twice along its shorter side ({2 * MIN_WINDOW} px); pass "
                      "--registration off to place the groups by their georeferencing only, or register a "
                      "larger crop")
    rows, cols = _axis(height, size, grid), _axis(width, size, grid)
    note = "" if size == window else f"window {size} px to fit the {width} x {height} px grid"
    return WindowLayout(size, [(r, c) for r in rows for c in cols], (len(rows), len(cols))), note


def _scaled(band) -> bool:
    return band.scale != 1.0 or band.offset != 0.0


class CloudScreen:
    """Which pixels of a window are cloud, from the product's mask or from reflectance.

    With a product cloud mask (:attr:`tiler.scene.Scene.cloud_mask`: Landsat
    QA_PIXEL/BQA, Sentinel-2 SCL/MSK_CLDPRB/QA60) its cloud pixels are used.
    Otherwise, on reflectance only (bands with a radiometric scale), a pixel
    is cloud when its red (else visible) reflectance exceeds
    ``max(CLOUD_MIN_REFLECTANCE, CLOUD_FACTOR * q25)``, ``q25`` the lower
    quartile of the whole scene in that band. Digital numbers are not
    screened (a brightness threshold on raw counts means nothing).

    Parameters
    ----------
    scene : Scene
    groups : sequence of str
        The compared groups, anchor first: the band is taken from the first
        that has one.
    memo : dict, optional
        Keeps the whole-scene quartile per band across the pairs of one
        registration (read once, not once per pair).

    Attributes
    ----------
    fraction : float
        Cloud fraction above which a window is rejected
        (:data:`MASK_CLOUD_FRACTION` with a product mask, else
        :data:`CLOUD_FRACTION`).
    source : str
        What screens: ``"product mask (landsat_bqa_pre)"``, ``"red
        reflectance > 0.25"``, or ``"none: ..."`` with the reason.
    """

    def __init__(self, scene: Scene, groups, *, memo: Optional[dict] = None) -> None:
        self.scene = scene
        self.band: Optional[tuple[str, int]] = None
        self.threshold = math.inf
        self.fraction = CLOUD_FRACTION
        if scene.cloud_mask is not None:
            self.source = f"product mask ({scene.cloud_mask.kind})"
            self.fraction = MASK_CLOUD_FRACTION
            return
        for name in groups:
            pick = _visible_band(scene, name)
            if pick is not None:
                self.band = (name, pick)
                break
        if self.band is None:
            self.source = "none: no visible band"
            return
        name, pos = self.band
        band = scene.group(name).bands[pos]
        if not _scaled(band):
            self.band = None
            self.source = ("none: the bands are digital numbers, not reflectance (declare scale/offset or a "
                           "cloud mask to screen clouds)")
            return
        memo = {} if memo is None else memo
        if ("q25", name, pos) not in memo:
            values, valid = _overview(scene, name, [pos], scaled=True)
            memo["q25", name, pos] = float(np.percentile(values[0][valid], 25)) if valid.any() else 0.0
        q25 = memo["q25", name, pos]
        self.threshold = max(CLOUD_MIN_REFLECTANCE, CLOUD_FACTOR * q25)
        self.source = f"{band.name or 'visible'} reflectance > {self.threshold:.3f}"

    def cloudy(self, transform: Affine, size: int, resampling) -> Optional[np.ndarray]:
        """Cloud pixels of a window (``size x size`` at ``transform``), or None without a screen."""
        if self.scene.cloud_mask is not None:
            return self.scene.read_cloud_mask(transform, (size, size))
        if self.band is None:
            return None
        name, pos = self.band
        data, valid = self.scene.warp(name, transform, (size, size), positions=[pos], resampling=resampling(name))
        return valid & (data[0] > self.threshold)


def _visible_band(scene: Scene, name: str) -> Optional[int]:
    bands = scene.group(name).bands

    def narrow_in(lo_hi):
        return [k for k, b in enumerate(bands) if b.centre is not None and lo_hi[0] <= b.centre <= lo_hi[1]
                and b.spectral_range[1] - b.spectral_range[0] < 150.0]
    red, visible = narrow_in(_RED_NM), narrow_in(_VISIBLE_NM)
    if red:
        return min(red, key=lambda k: abs(bands[k].centre - 660.0))
    if visible:
        return max(visible, key=lambda k: bands[k].centre)
    broad = [k for k, b in enumerate(bands) if b.centre is not None and _VISIBLE_NM[0] <= b.centre <= _VISIBLE_NM[1]]
    return broad[0] if broad else None


def _overview(scene: Scene, name: str, positions, *, scaled: bool) -> tuple[np.ndarray, np.ndarray]:
    """The whole of a group, decimated (nearest) to at most _OVERVIEW pixels per side on its own grid.

    A decimated read through GDAL (``out_shape``): the file's overviews or
    JPEG 2000 resolution levels where it has them, never the full-resolution
    scene in memory.
    """
    from rasterio.enums import Resampling

    g, grid = scene.group(name), scene.grid(name)
    step = max(1.0, max(grid.height, grid.width) / _OVERVIEW)
    shape = (max(1, int(grid.height / step)), max(1, int(grid.width / step)))
    positions = range(len(g.bands)) if positions is None else positions
    out = np.empty((len(positions),) + shape, np.float32)
    valid = np.ones(shape, bool)
    for k, j in enumerate(positions):
        band = g.bands[j]
        ds = scene.dataset(band.path)
        out[k] = ds.read(band.index, out_shape=shape, resampling=Resampling.nearest, out_dtype=np.float32)
        nodata = g.nodata if g.nodata is not None else ds.nodata
        if nodata is not None:
            valid &= out[k] != nodata
        if scaled:
            out[k] = out[k] * np.float32(band.scale) + np.float32(band.offset)
    return out, valid & np.isfinite(out).all(axis=0)


def detect_fill(scene: Scene, name: str) -> Optional[tuple[float, float]]:
    """An undeclared fill value of a group: exact zeros (or the dtype's maximum) in every band.

    Looked for only where neither the scene nor the files declare nodata or a
    mask. A value counts as fill where the pixels holding it in every band of
    the group form connected areas (8-connectivity, on a decimated
    nearest-neighbour read of the whole group) that touch the scene's edge or
    together cover at least :data:`FILL_MIN_FRACTION` of it.

    Parameters
    ----------
    scene : Scene
    name : str
        Band group.

    Returns
    -------
    tuple of (value, fraction) or None
        The fill value (raw digital number) and the fraction of the scene it
        covers; None when there is none.
    """
    g = scene.group(name)
    if g.nodata is not None:
        return None
    datasets = [scene.dataset(p) for p in g.paths]
    if any(ds.nodata is not None or any(f != ["all_valid"] for f in
                                        ([flag.name for flag in fl] for fl in ds.mask_flag_enums))
           for ds in datasets):
        return None
    from scipy import ndimage

    data, _ = _overview(scene, name, None, scaled=False)
    dtype = np.dtype(datasets[0].dtypes[0])
    candidates = [0.0] + ([float(np.iinfo(dtype).max)] if dtype.kind in "ui" else [])
    for value in candidates:
        same = (data == value).all(axis=0)
        if not same.any():
            continue
        labels, n = ndimage.label(same, structure=np.ones((3, 3), bool))
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        big = sizes >= FILL_MIN_FRACTION * same.size
        keep = np.zeros(n + 1, bool)
        keep[edge] = True
        keep |= big
        keep[0] = False
        fraction = float(sizes[keep].sum()) / same.size
        if fraction >= FILL_MIN_FRACTION:
            return value, fraction
    return None
