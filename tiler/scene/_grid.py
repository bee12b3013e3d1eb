"""The processing grid: the reference grid at the model's pixel size, and the way back to the scene's grid.

A model learns objects at one ground sampling distance (GSD). Where the model file
records the pixel size of its training imagery and the scene's differs by more
than :data:`RESAMPLE_TOLERANCE`, a run reads the scene resampled onto a
*processing grid*: the same CRS and origin as the reference grid, the model's
pixel size (every axis scaled by one factor), enough pixels to cover the scene.
The engine runs there unchanged; the probabilities go back onto the scene's grid
before the class map (:class:`AxisMap`), or the products are written on the
processing grid (``--grid model``).

Deepness (QGIS) processes every scene at its model's resolution in the same
way; tiler's difference is that the way back is streamed, block by block, with
the memory of a strip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
from affine import Affine

from tiler.scene._geometry import _affine_scale

__all__ = ["ProcessingGrid", "AxisMap", "processing_grid", "RESAMPLE_TOLERANCE", "RESAMPLE_MODES", "OUTPUT_GRIDS"]

#: Relative difference of pixel sizes (scene / model - 1, either way) above which a run resamples the scene
#: onto the model's pixel size. 5 %: below it the change of scale is smaller than the variation of one
#: scene's own GSD (Sentinel-2's 20.6° field of view, Landsat's 15°, any off-nadir view: the ground pixel
#: grows by several percent from nadir to the swath edge) and than the difference between a geographic CRS's
#: pixel sides, so that resampling would blur the image (an interpolation of every pixel) for no gain in
#: scale; above it objects are visibly smaller or larger than the network saw them in training.
RESAMPLE_TOLERANCE = 0.05

#: ``--resample``: onto the model's pixel size where it differs (auto), or never (off: the scene's grid, with a
#: warning where the pixel sizes differ by more than :data:`tiler.domain.PIXEL_SIZE_FACTOR`).
RESAMPLE_MODES = ("auto", "off")

#: ``--grid``: the products on the scene's reference grid (its CRS, transform, width and height), or on the
#: processing grid at the model's pixel size.
OUTPUT_GRIDS = ("scene", "model")


@dataclass(frozen=True, slots=True)
class ProcessingGrid:
    """The grid a run's engine works on: the reference grid, or that grid at the model's pixel size.

    Parameters
    ----------
    transform : affine.Affine
        Processing pixel to CRS coordinates: the reference transform scaled by ``factor`` on both axes
        (same origin, same rotation).
    width, height : int
        Processing pixels; cover the scene (``ceil(scene size / factor)``).
    factor : float
        Processing pixel side over scene pixel side (3.0: a 10 m scene processed at 30 m; 1.0: no resampling).
    scene_width, scene_height : int
        The reference grid's size.
    scene_transform : affine.Affine
        The reference grid's transform.
    scene_pixel_size_m, model_pixel_size_m : float or None
        Metres (:meth:`tiler.scene.Scene.pixel_size_m`, the model file's training GSD).
    reason : str
        Why this grid: a sentence for ``tiler info`` and the run's log.
    col_offset, row_offset : float, default 0
        Where the processing grid's origin lies on the reference grid, in reference pixels (in ``(-factor, 0]``):
        non-zero where the grid is that of a band group at the model's pixel size (Landsat's 30 m
        multispectral group beside a 15 m panchromatic reference), so that its pixels are read as they are.
    snapped_to : str, optional
        That band group.

    Raises
    ------
    ValueError
        A size below 1 or a factor that is not positive and finite.
    """

    transform: Affine
    width: int
    height: int
    factor: float
    scene_width: int
    scene_height: int
    scene_transform: Affine
    scene_pixel_size_m: Optional[float] = None
    model_pixel_size_m: Optional[float] = None
    reason: str = ""
    col_offset: float = 0.0
    row_offset: float = 0.0
    snapped_to: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("width", "height", "scene_width", "scene_height"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"factor must be positive and finite, got {self.factor}")

    @classmethod
    def of_scene(cls, scene, *, reason: str = "", model_pixel_size_m: Optional[float] = None) -> "ProcessingGrid":
        """The scene's reference grid itself (no resampling)."""
        return cls(scene.transform, scene.width, scene.height, 1.0, scene.width, scene.height, scene.transform,
                   scene.pixel_size_m(), model_pixel_size_m, reason)

    @property
    def resampled(self) -> bool:
        """Whether the processing grid differs from the scene's grid."""
        return self.factor != 1.0

    @property
    def pixel_size(self) -> float:
        """Side of a processing pixel in the CRS's units (the square root of the transform's determinant)."""
        return _affine_scale(self.transform)

    @property
    def resampling(self) -> str:
        """How bands are read onto the grid: ``average`` when it is coarser than the scene (area-weighted), the
        band group's own upsampling (default ``bilinear``) when finer, ``none`` on the scene's grid."""
        if not self.resampled:
            return "none"
        return "average" if self.factor > 1 else "bilinear"

    @property
    def back(self) -> str:
        """How probabilities go back onto the scene's grid: ``bilinear`` from a coarser grid, ``average`` (area
        weights) from a finer one."""
        return "none" if not self.resampled else ("bilinear" if self.factor > 1 else "average")

    def rows(self) -> "AxisMap":
        """The scene's rows in processing rows (:class:`AxisMap`)."""
        return _axis_map(self.scene_height, self.height, self.factor, self.row_offset)

    def cols(self) -> "AxisMap":
        """The scene's columns in processing columns (:class:`AxisMap`)."""
        return _axis_map(self.scene_width, self.width, self.factor, self.col_offset)

    def to_dict(self) -> dict:
        """JSON-ready (``tiler info --json``, the run report's ``processing_grid``): pixel size in the CRS's
        units, width, height, the resampling of the reads and of the way back, the factor and the reason."""
        return {"pixel_size": self.pixel_size, "width": self.width, "height": self.height,
                "resampling": self.resampling, "back": self.back, "factor": self.factor,
                "scene_pixel_size_m": self.scene_pixel_size_m, "model_pixel_size_m": self.model_pixel_size_m,
                "offset": [self.col_offset, self.row_offset], "band_group": self.snapped_to, "reason": self.reason}


def processing_grid(scene, model_pixel_size_m: Optional[float], *, resample: str = "auto") -> ProcessingGrid:
    """The processing grid of a scene for a model trained at ``model_pixel_size_m``.

    Parameters
    ----------
    scene : tiler.scene.Scene
        Open.
    model_pixel_size_m : float or None
        The model's training pixel size, metres (:attr:`tiler.model.ModelInfo.input_domain`'s
        ``pixel_size``); None where the file records none.
    resample : {"auto", "off"}
        ``off``: always the scene's grid.

    Returns
    -------
    ProcessingGrid
        At the model's pixel size where the scene's differs by more than :data:`RESAMPLE_TOLERANCE`; else the
        scene's grid, with the reason.

    Raises
    ------
    ValueError
        For an unknown ``resample``.

    Notes
    -----
    The factor is ``model / scene`` pixel size in metres, applied to both axes of the reference transform, so a
    geographic CRS's pixel keeps its aspect. Where a band group other than the reference is itself at the
    model's pixel size and parallel to the reference grid (Landsat's 30 m multispectral group beside its 15 m
    panchromatic reference, whose grid starts half a pan pixel away), the processing grid is that group's grid,
    so that its pixels reach the model as they are: on the cumulus scene of the shared Landsat-8 data, a 30 m
    grid a quarter of a pixel off the multispectral one changed the cloud model's class on 14 % of the pixels.
    Metres of a geographic CRS are those of :meth:`tiler.scene.Scene.pixel_size_m`.
    """
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE_MODES)}, got {resample!r}")
    scene_m = scene.pixel_size_m()
    if model_pixel_size_m is None:
        return ProcessingGrid.of_scene(scene, reason="the scene's grid: the model records no pixel size")
    if scene_m is None:
        return ProcessingGrid.of_scene(scene, model_pixel_size_m=model_pixel_size_m,
                                       reason="the scene's grid: the scene is not georeferenced, its pixel size "
                                              "is unknown")
    ratio = model_pixel_size_m / scene_m
    if resample == "off":
        return ProcessingGrid.of_scene(scene, model_pixel_size_m=model_pixel_size_m,
                                       reason=f"the scene's grid (--resample off): {scene_m:.4g} m pixels, the "
                                              f"model's {model_pixel_size_m:.4g} m")
    if abs(ratio - 1) <= RESAMPLE_TOLERANCE and abs(1 / ratio - 1) <= RESAMPLE_TOLERANCE:
        return ProcessingGrid.of_scene(scene, model_pixel_size_m=model_pixel_size_m,
                                       reason=f"the scene's grid: its {scene_m:.4g} m pixels are the model's "
                                              f"{model_pixel_size_m:.4g} m within {RESAMPLE_TOLERANCE:.0%}")
    snap = _group_at(scene, model_pixel_size_m / scene_m * _affine_scale(scene.transform))
    off_c = off_r = 0.0
    if snap is not None:
        name, ratio, off_c, off_r = snap
    width = max(1, math.ceil((scene.width - off_c) / ratio - 1e-9))
    height = max(1, math.ceil((scene.height - off_r) / ratio - 1e-9))
    how = "averaged" if ratio > 1 else "interpolated"
    if snap is not None:
        reason = (f"the model's pixel size, {model_pixel_size_m:.4g} m: the grid of band group {snap[0]}, read as it "
                  f"is, the other groups resampled onto it ({width} x {height} px, {ratio:.4g}x the scene's "
                  "pixel)")
    else:
        reason = (f"the model's pixel size: the scene's {scene_m:.4g} m pixels {how} onto "
                  f"{model_pixel_size_m:.4g} m ({width} x {height} px, {ratio:.4g}x the scene's pixel)")
    return ProcessingGrid(scene.transform @ Affine.translation(off_c, off_r) @ Affine.scale(ratio), width, height,
                          ratio, scene.width, scene.height, scene.transform, scene_m, model_pixel_size_m, reason,
                          off_c, off_r, snap[0] if snap is not None else None)


def _group_at(scene, pixel_size: float) -> Optional[tuple[str, float, float, float]]:
    """A band group whose own grid is at ``pixel_size`` (reference CRS units) and parallel to the reference
    grid: ``(name, factor, col offset, row offset)``, the offsets in reference pixels reduced into
    ``(-factor, 0]``; None where there is none (or the reference grid is rotated)."""
    t = scene.transform
    if not scene.georeferenced or t.b or t.d:
        return None
    for g in scene.groups:
        grid = scene.grid(g.name)
        gt = grid.placement
        if g.name == scene.reference or grid.placed_by != "transform" or gt.b or gt.d:
            continue
        if gt.a / t.a <= 0 or gt.e / t.e <= 0 or abs(gt.a / gt.e - t.a / t.e) > 1e-9 * abs(t.a / t.e):
            continue  # another orientation or aspect
        if abs(_affine_scale(gt) / pixel_size - 1) > 1e-6:
            continue
        factor = gt.a / t.a
        off_c, off_r = (gt.c - t.c) / t.a, (gt.f - t.f) / t.e
        off_c -= factor * math.ceil(off_c / factor - 1e-9)
        off_r -= factor * math.ceil(off_r / factor - 1e-9)
        return g.name, factor, off_c, off_r
    return None


@dataclass(frozen=True)
class AxisMap:
    """One axis of the scene's grid as weighted taps of processing pixels (separable resampling).

    Parameters
    ----------
    index : ndarray of shape (scene, tap), int64
        Processing pixels each scene pixel takes, clamped to the processing axis.
    weight : ndarray of shape (scene, tap), float32
        Their weights; each row sums to 1.
    nearest : ndarray of shape (scene,), int64
        The processing pixel holding each scene pixel's centre (its validity is the scene pixel's).
    last : ndarray of shape (scene,), int64
        The largest index a scene pixel takes: a scene pixel is computed with the block of processing
        pixels holding its last tap (non-decreasing along the axis).
    reach : int
        The most processing pixels before its last tap that a scene pixel takes (the rows or columns a block
        needs from its predecessor).

    Notes
    -----
    From a coarser grid (``factor > 1``): linear interpolation between pixel centres, scene pixel ``x`` at
    processing coordinate ``u = (x + 0.5) / factor - 0.5`` taking ``floor(u)`` and ``floor(u) + 1`` with
    weights ``1 - frac(u)`` and ``frac(u)``, clamped at the edges (GDAL's bilinear upsampling). From a finer
    grid: the area-weighted mean of the processing pixels the scene pixel covers (GDAL's ``average``).
    """

    index: np.ndarray
    weight: np.ndarray
    nearest: np.ndarray
    last: np.ndarray
    reach: int

    @classmethod
    def build(cls, scene: int, processing: int, factor: float, offset: float = 0.0) -> "AxisMap":
        """The map of ``scene`` pixels onto ``processing`` pixels ``factor`` times their side, the first of which
        starts ``offset`` scene pixels from the scene's first (``<= 0``)."""
        x = np.arange(scene, dtype=np.float64) - offset
        if factor >= 1:
            u = (x + 0.5) / factor - 0.5
            i0 = np.floor(u)
            frac = u - i0
            index = np.stack([i0, i0 + 1], axis=1).astype(np.int64)
            weight = np.stack([1 - frac, frac], axis=1)
        else:
            span = 1.0 / factor  # processing pixels per scene pixel
            lo, hi = x * span, (x + 1) * span
            first = np.floor(lo + 1e-9)
            taps = int(math.ceil(span)) + 1
            index = first[:, None] + np.arange(taps)[None, :]
            weight = np.clip(np.minimum(hi[:, None], index + 1) - np.maximum(lo[:, None], index), 0, None)
            weight[weight < 1e-9] = 0
            index = index.astype(np.int64)
        index = np.clip(index, 0, processing - 1)
        weight = (weight / weight.sum(axis=1, keepdims=True)).astype(np.float32)
        nearest = np.clip(np.floor((x + 0.5) / factor), 0, processing - 1).astype(np.int64)
        last = np.where(weight > 0, index, -1).max(axis=1)
        index = np.where(weight > 0, index, last[:, None])  # a tap of no weight points at a used pixel
        first_used = np.where(weight > 0, index, processing).min(axis=1)
        reach = int((last - np.minimum(first_used, nearest)).max()) if scene else 0
        return cls(index, weight, nearest, last, reach)

    def span(self, start: int, stop: int, size: int) -> tuple[int, int]:
        """Scene pixels computed with processing pixels ``[start, stop)`` of an axis of ``size``: those whose
        last tap is in it (from the axis's first scene pixel where ``start`` is 0, to its last where
        ``stop`` is ``size``). The spans of consecutive blocks partition the scene's axis."""
        a = 0 if start <= 0 else int(np.searchsorted(self.last, start, side="left"))
        b = len(self.last) if stop >= size else int(np.searchsorted(self.last, stop, side="left"))
        return a, b


@lru_cache(maxsize=16)
def _axis_map(scene: int, processing: int, factor: float, offset: float) -> AxisMap:
    """:meth:`AxisMap.build`, once per axis: a run asks for its rows in the stream, the way back and the parts'
    rows (the arrays are shared, never modified)."""
    return AxisMap.build(scene, processing, factor, offset)
