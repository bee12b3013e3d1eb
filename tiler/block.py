"""The finished block: a rectangle of the output that no future patch touches, as every sink reads it.

The engine (:func:`tiler.engine.stream`) hands out blocks of blended predictions; the index loop, the
assembly of a distributed run and ``tiler vectorize`` hand out blocks of values or class maps read or
computed otherwise; :func:`tiler.regrid.to_scene_grid` turns blocks of a processing grid into blocks of the
scene's grid. A sink sees only this type.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

import numpy as np
from rasterio.windows import Window

if TYPE_CHECKING:
    from tiler.blend import Accumulator

__all__ = ["Block"]


class Block:
    """A finished rectangle of the output: rows no future patch touches.

    Handed out by :func:`stream` (blended predictions) and by the index and
    vectorising loops (values or a class map read from a file). A sink reads
    what it needs through :meth:`values` or :meth:`class_map`; each is computed
    once per block and shared by every sink fed in the same pass.

    Parameters
    ----------
    rows, cols : tuple of int
        ``(start, stop)`` output pixels of the block.
    valid : ndarray of shape (rows, cols), bool
        Valid-data mask of the block (a view; not to be modified).
    accumulator : Accumulator, optional
        The engine's accumulator holding the blended probabilities of these
        rows (read through the fused crop-and-mask kernels, never exposed).
    values : ndarray of shape (band, rows, cols), float32, optional
        The block's values where they are already computed (spectral indices),
        NaN where not valid.
    class_map : ndarray of shape (rows, cols), uint8, optional
        A class map read from a file (``tiler vectorize``), ``nodata`` where
        not valid.
    seconds : dict, optional
        Per-stage counters; the fused kernels add their time to ``"blend"``.

    Raises
    ------
    ValueError
        If ``valid`` does not have the block's shape.

    Notes
    -----
    A block from :func:`stream` is valid only until the engine moves on (the
    accumulator rolls); a sink that keeps data copies it.
    """

    __slots__ = ("rows", "cols", "valid", "_acc", "_values", "_class_map", "_seconds")

    def __init__(self, rows: tuple[int, int], cols: tuple[int, int], valid: np.ndarray, *,
                 accumulator: Optional[Accumulator] = None, values: Optional[np.ndarray] = None,
                 class_map: Optional[np.ndarray] = None, seconds: Optional[dict] = None) -> None:
        self.rows, self.cols, self.valid = rows, cols, valid
        if valid.shape != (rows[1] - rows[0], cols[1] - cols[0]):
            raise ValueError(f"valid mask of shape {valid.shape} for rows {rows}, cols {cols}")
        self._acc, self._values, self._class_map, self._seconds = accumulator, values, class_map, seconds

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the block."""
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]

    @property
    def window(self) -> Window:
        """The block as a rasterio :class:`~rasterio.windows.Window` of the output grid."""
        return Window(self.cols[0], self.rows[0], self.cols[1] - self.cols[0], self.rows[1] - self.rows[0])

    @property
    def has_values(self) -> bool:
        """Whether :meth:`values` can give values (computed, or computable from the accumulator)."""
        return self._values is not None or self._acc is not None

    def values(self, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Float values per band (class probabilities, or index values).

        Parameters
        ----------
        out : ndarray of shape (band, rows, cols), float32, optional
            Where to put the probabilities (a caller's reused buffer) when they
            are computed by this call.

        Returns
        -------
        ndarray of shape (band, rows, cols), float32
            NaN where not valid. Computed once; do not modify.
        """
        if self._values is None:
            if self._acc is None:
                raise ValueError("this block has no values: it carries a class map only, or the engine has "
                                 "moved on (a block is valid until the next one is requested)")
            t = time.perf_counter()
            self._values = self._acc.emit_probability(self.rows, self.cols, self.valid, out=out)
            self._count(t)
        return self._values

    def class_map(self, nodata: int = 255) -> np.ndarray:
        """Class index per pixel: the argmax of the probabilities (ties to the lower index).

        Parameters
        ----------
        nodata : int, default 255
            Value where not valid (a block read from a file has its own).

        Returns
        -------
        ndarray of shape (rows, cols), uint8
            Computed once; do not modify.
        """
        if self._class_map is None and self._acc is None and self._values is not None:
            # Probabilities already computed (resampled onto the scene's grid): their argmax.
            cm = np.argmax(np.where(np.isnan(self._values), -np.inf, self._values), axis=0).astype(np.uint8)
            cm[~self.valid] = nodata
            self._class_map = cm
        if self._class_map is None:
            if self._acc is None:
                raise ValueError("this block has no class map: the engine has moved on (a block is valid until "
                                 "the next one is requested)")
            t = time.perf_counter()
            self._class_map = self._acc.emit_class(self.rows, self.cols, self.valid, nodata=nodata)
            self._count(t)
        return self._class_map

    def detach(self) -> None:
        """Drop the reference to the engine's accumulator (called by the engine when it moves on).

        What was computed stays readable; what was not raises ``ValueError``.
        """
        self._acc = None

    def _count(self, t: float) -> None:
        if self._seconds is not None:
            self._seconds["blend"] += time.perf_counter() - t

    def __repr__(self) -> str:
        return f"Block(rows={self.rows}, cols={self.cols})"
