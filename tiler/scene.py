"""Opening a scene and reading windows of it, reflect-padded at the edges.

A scene here is one raster that rasterio can open (GeoTIFF, JPEG, PNG, ...)
whose pixel grid is the reference grid. Band groups at other resolutions and
their registration build on this (DESIGN.md, ``registration/``).
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from tiler.errors import BandMismatchError, SceneReadError
from tiler.plan import reflect_indices

__all__ = ["Scene", "open_scene", "BandMapping"]

log = logging.getLogger(__name__)

_COLOR_NAMES = {
    ColorInterp.red: "red",
    ColorInterp.green: "green",
    ColorInterp.blue: "blue",
    ColorInterp.alpha: "alpha",
}


@dataclass(frozen=True, slots=True)
class BandMapping:
    """How model channels were found among a scene's bands.

    Attributes
    ----------
    indexes : tuple of int
        1-based band index per channel, in channel order.
    method : {"names", "position", "explicit"}
        Matched by band names, by position (unnamed bands, same count), or
        given by the caller.
    """

    indexes: tuple[int, ...]
    method: str


class Scene:
    """An open scene: its reference grid, band names and windowed reads.

    Use :func:`open_scene` (a context manager) to create one.

    Attributes
    ----------
    path : str
    height, width, count : int
        Rows, columns and bands of the reference grid.
    crs : rasterio.crs.CRS or None
        None when the raster has no georeferencing.
    transform : affine.Affine
        Pixel to CRS coordinates (identity when not georeferenced).
    georeferenced : bool
    nodata : float or None
    band_names : tuple of (str or None)
        Per band: its description, else its colour interpretation name
        (red, green, blue, alpha), else None.
    """

    def __init__(self, path: str, dataset: rasterio.io.DatasetReader) -> None:
        self.path = path
        self._ds = dataset
        self.height, self.width, self.count = dataset.height, dataset.width, dataset.count
        self.georeferenced = dataset.crs is not None or dataset.transform != Affine.identity()
        self.crs: Optional[CRS] = dataset.crs
        self.transform: Affine = dataset.transform
        self.nodata = dataset.nodata
        names = []
        for desc, ci in zip(dataset.descriptions, dataset.colorinterp):
            if desc:
                names.append(desc.strip().lower())
            else:
                names.append(_COLOR_NAMES.get(ci))
        self.band_names: tuple[Optional[str], ...] = tuple(names)

    def describe_bands(self) -> str:
        """Human-readable list of bands, e.g. ``"1 (red), 2 (green), 3 (unnamed)"``."""
        return ", ".join(f"{i} ({n or 'unnamed'})" for i, n in enumerate(self.band_names, start=1))

    def map_channels(self, channels: Sequence[str], *,
                     bands: Optional[Sequence[int]] = None) -> BandMapping:
        """Find the model's input channels among the scene's bands.

        Parameters
        ----------
        channels : sequence of str
            Channel names the model needs, in order.
        bands : sequence of int, optional
            Explicit 1-based band indexes, one per channel.

        Returns
        -------
        BandMapping

        Raises
        ------
        BandMismatchError
            If a channel is missing: named bands lack it, or unnamed bands are
            fewer than (or not as many as) the channels. The message lists what
            the scene has and names the fix (``--bands``).
        """
        need = len(channels)
        wanted = ", ".join(channels)
        if bands is not None:
            bands = tuple(int(b) for b in bands)
            if len(bands) != need:
                raise BandMismatchError(
                    f"--bands gives {len(bands)} band(s) {list(bands)} but the model needs "
                    f"{need} channels ({wanted})"
                )
            bad = [b for b in bands if not 1 <= b <= self.count]
            if bad:
                raise BandMismatchError(
                    f"band index(es) {bad} out of range: {self.path!r} has bands 1..{self.count}"
                )
            return BandMapping(bands, "explicit")
        lookup = {n: i for i, n in enumerate(self.band_names, start=1) if n}
        if all(c.lower() in lookup for c in channels):
            return BandMapping(tuple(lookup[c.lower()] for c in channels), "names")
        if self.count == need and not any(c.lower() in lookup for c in channels):
            log.info("scene bands carry no channel names; using bands 1..%d as %s", need, wanted)
            return BandMapping(tuple(range(1, need + 1)), "position")
        missing = [c for c in channels if c.lower() not in lookup]
        raise BandMismatchError(
            f"the model needs {need} channels ({wanted}) but {self.path!r} has "
            f"{self.count} band(s): {self.describe_bands()}; missing {', '.join(missing)}. "
            "Pass --bands with one 1-based band index per channel, or use a model for these bands"
        )

    def read(self, rows: tuple[int, int], cols: tuple[int, int],
             indexes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the reference grid, reflect-padded past the edges.

        Only the pixels inside the scene that the window needs are read.

        Parameters
        ----------
        rows, cols : tuple of int
            ``(start, stop)`` in scene pixels; may reach past the edges, where
            the scene is mirrored (NumPy ``reflect`` mode).
        indexes : sequence of int
            1-based band indexes to read, in output order.

        Returns
        -------
        bands : ndarray of shape (band, row, col), float32
        valid : ndarray of shape (row, col), bool
            False where the input is nodata (GDAL's dataset mask: nodata value,
            alpha band or internal mask) or not finite.

        Raises
        ------
        SceneReadError
            If GDAL fails to read the window (truncated or corrupt file).
        """
        ridx = reflect_indices(rows[0], rows[1], self.height)
        cidx = reflect_indices(cols[0], cols[1], self.width)
        r0, r1 = int(ridx.min()), int(ridx.max()) + 1
        c0, c1 = int(cidx.min()), int(cidx.max()) + 1
        window = Window(c0, r0, c1 - c0, r1 - r0)
        try:
            data = self._ds.read(list(indexes), window=window, out_dtype=np.float32)
            mask = self._ds.dataset_mask(window=window)
        except RasterioIOError as exc:
            raise SceneReadError(
                f"cannot read rows {r0}..{r1} of {self.path!r}: {exc}; the file may be "
                "truncated or corrupt"
            ) from None
        contiguous = (r0 == rows[0] and r1 == rows[1] and c0 == cols[0] and c1 == cols[1])
        if not contiguous:
            data = data[:, ridx - r0][:, :, cidx - c0]
            mask = mask[ridx - r0][:, cidx - c0]
        valid = mask > 0
        valid &= np.isfinite(data).all(axis=0)
        return data, valid

    def close(self) -> None:
        """Close the underlying dataset."""
        self._ds.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_scene(path: Union[str, os.PathLike]) -> Scene:
    """Open a single raster as a scene.

    A raster without georeferencing (a plain JPEG or PNG) opens without a
    warning; its output is then not georeferenced either.

    Parameters
    ----------
    path : path-like
        Any raster rasterio can open.

    Returns
    -------
    Scene
        Also a context manager that closes the file.

    Raises
    ------
    SceneReadError
        If the file is missing, not a raster, or unreadable.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SceneReadError(f"scene {path!r} does not exist; check the path")
    if os.path.isdir(path):
        raise SceneReadError(f"scene {path!r} is a folder; pass a raster file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
            scene = Scene(path, ds)
    except RasterioIOError as exc:
        raise SceneReadError(
            f"cannot open {path!r} as a raster: {exc}; pass a GeoTIFF, JPEG, PNG or "
            "another format GDAL reads"
        ) from None
    if scene.count < 1:
        scene.close()
        raise SceneReadError(f"{path!r} has no raster bands")
    return scene
