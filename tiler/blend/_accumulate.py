"""The rolling weighted-mean accumulator of patch predictions."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tiler.blend import _kernels
from tiler.errors import PlanError

__all__ = ["Accumulator"]


class Accumulator:
    """Window-weighted mean of patch predictions over a rectangle of the reference grid.

    Holds the running weighted mean per class and the weight sum per pixel for
    the rows ``[row0, row0 + height)`` and columns ``[col0, col0 + width)``
    (scene pixels; negative or past-the-edge positions are the reflect-padded
    border). Used as a whole-scene accumulator by :func:`tiler.predict` and as
    the rolling strip accumulator of the streaming engine, where :meth:`roll`
    moves it down the scene keeping the rows still open.

    Parameters
    ----------
    classes : int
        Number of output classes K >= 1.
    rows, cols : tuple of int
        ``(start, stop)`` extent in scene pixels.
    window : ndarray of shape (patch, patch), float32
        The blending window, strictly positive (see :func:`get_window`).

    Notes
    -----
    The mean is updated incrementally (West's weighted update),

    .. math::

        W \\leftarrow W + w, \\qquad m \\leftarrow m + \\frac{w}{W}(p - m),

    which equals ``sum(w p) / sum(w)`` up to float32 rounding for any window,
    scene size and shape, and is *exact* where the predictions agree
    (``p - m = 0``): a model predicting a constant c yields exactly c
    (DESIGN.md, invariant 2). The first patch at a pixel sets ``m = p``
    exactly (``w / W = 1``). The work is a numba kernel, parallel over rows and
    deterministic: per pixel, patches are applied in the order given.

    Memory is ``(K + 1) * height * width * 4`` bytes, all float32.

    References
    ----------
    D. H. D. West, "Updating mean and variance estimates: an improved method",
    Communications of the ACM 22(9), 1979.
    """

    def __init__(self, classes: int, rows: tuple[int, int], cols: tuple[int, int],
                 window: np.ndarray) -> None:
        if classes < 1:
            raise PlanError(f"classes must be >= 1, got {classes}")
        self.classes = classes
        self.window = np.ascontiguousarray(window, dtype=np.float32)
        if self.window.ndim != 2 or self.window.shape[0] != self.window.shape[1]:
            raise PlanError(f"window must be square (patch, patch), got {self.window.shape}")
        self.col0, col1 = cols
        self.row0 = rows[0]
        self.mean = np.zeros((classes, rows[1] - rows[0], col1 - self.col0), np.float32)
        self.weight = np.zeros(self.mean.shape[1:], np.float32)
        self._scratch = np.empty((self.mean.shape[1], self.window.shape[0]), np.float32)
        #: Physical row of logical row 0: the buffers are a ring of rows, so
        #: rolling down the scene moves ``head`` instead of copying rows.
        self.head = 0

    @property
    def rows(self) -> tuple[int, int]:
        """``(start, stop)`` scene rows held."""
        return self.row0, self.row0 + self.mean.shape[1]

    @property
    def cols(self) -> tuple[int, int]:
        """``(start, stop)`` scene columns held."""
        return self.col0, self.col0 + self.mean.shape[2]

    def add_batch(self, predictions: np.ndarray, rows: Sequence[int], cols: Sequence[int]) -> None:
        """Add a batch of patch predictions, in order.

        Parameters
        ----------
        predictions : ndarray of shape (patch_count, K, patch, patch), float32
        rows, cols : sequence of int
            Scene position of each patch's upper-left pixel.

        Raises
        ------
        PlanError
            If shapes disagree or a patch reaches outside the accumulator.
        """
        preds = np.ascontiguousarray(predictions, dtype=np.float32)
        p = self.window.shape[0]
        if preds.ndim != 4 or preds.shape[1:] != (self.classes, p, p):
            raise PlanError(f"predictions must have shape (n, {self.classes}, {p}, {p}), got {preds.shape}")
        r = np.asarray(rows, np.int64) - self.row0
        c = np.asarray(cols, np.int64) - self.col0
        if len(r) != len(preds) or len(c) != len(preds):
            raise PlanError(f"{len(preds)} predictions but {len(r)} rows and {len(c)} cols")
        if len(r) and (r.min() < 0 or c.min() < 0 or r.max() + p > self.mean.shape[1]
                       or c.max() + p > self.mean.shape[2]):
            raise PlanError(f"a patch reaches outside the accumulator rows {self.rows}, cols {self.cols}")
        _kernels.accumulate_batch(self.mean, self.weight, preds, self.window, r, c, self._scratch, self.head)

    def _local(self, rows: tuple[int, int], cols: tuple[int, int]) -> tuple[int, int, int, int]:
        r0, r1 = rows[0] - self.row0, rows[1] - self.row0
        c0, c1 = cols[0] - self.col0, cols[1] - self.col0
        if r0 < 0 or c0 < 0 or r1 > self.mean.shape[1] or c1 > self.mean.shape[2] or r1 < r0 or c1 < c0:
            raise PlanError(f"rows {rows}, cols {cols} are outside the accumulator {self.rows}, {self.cols}")
        return r0, r1, c0, c1

    def _physical(self, r0: int, r1: int) -> np.ndarray:
        return (np.arange(r0, r1) + self.head) % self.mean.shape[1]

    def normalised(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Blended probabilities of a sub-rectangle.

        Returns
        -------
        ndarray of shape (K, rows, cols), float32
            Weighted mean per pixel (a copy); 0 where no patch contributed.
        """
        r0, r1, c0, c1 = self._local(rows, cols)
        return self.mean[:, self._physical(r0, r1), c0:c1]

    def weight_sum(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Accumulated window weight of a sub-rectangle, ndarray of shape (rows, cols), float32 (a copy)."""
        r0, r1, c0, c1 = self._local(rows, cols)
        return self.weight[self._physical(r0, r1), c0:c1]

    def emit_probability(self, rows: tuple[int, int], cols: tuple[int, int], valid: np.ndarray, *,
                         nodata: float = float("nan"), out: Optional[np.ndarray] = None) -> np.ndarray:
        """Finished rows as probabilities, nodata where not valid (fused crop + mask).

        Returns
        -------
        ndarray of shape (K, rows, cols), float32
        """
        r0, r1, c0, c1 = self._local(rows, cols)
        if out is None:
            out = np.empty((self.classes, r1 - r0, c1 - c0), np.float32)
        _kernels.emit_probability(self.mean, np.ascontiguousarray(valid, bool), r0, c0, out,
                                  np.float32(nodata), self.head)
        return out

    def emit_class(self, rows: tuple[int, int], cols: tuple[int, int], valid: np.ndarray, *,
                   nodata: int = 255, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Finished rows reduced to class indices (fused argmax + crop + cast to uint8).

        Ties go to the lower class index, like ``np.argmax``.

        Returns
        -------
        ndarray of shape (rows, cols), uint8
            Class index, ``nodata`` where not valid.
        """
        r0, r1, c0, c1 = self._local(rows, cols)
        if out is None:
            out = np.empty((r1 - r0, c1 - c0), np.uint8)
        _kernels.emit_class(self.mean, np.ascontiguousarray(valid, bool), r0, c0, out, np.uint8(nodata),
                            self.head)
        return out

    def roll(self, rows: tuple[int, int]) -> None:
        """Move the accumulator to new rows, keeping the rows both extents share.

        Rows that leave are dropped (they must have been emitted); new rows
        start at zero. Moving down by any amount at unchanged height only
        zeroes the dropped rows and advances the ring's head: no row is copied.
        """
        new0, new1 = rows
        if (new0, new1) == self.rows:
            return
        height = self.mean.shape[1]
        if new1 - new0 == height and self.row0 < new0 < self.rows[1]:
            drop = new0 - self.row0
            for start, stop in self._spans(0, drop):
                self.mean[:, start:stop] = 0
                self.weight[start:stop] = 0
            self.head = (self.head + drop) % height
            self.row0 = new0
            return
        keep0, keep1 = max(new0, self.row0), min(new1, self.rows[1])
        new_height = new1 - new0
        new_mean = np.zeros((self.classes, new_height, self.mean.shape[2]), np.float32)
        new_weight = np.zeros((new_height, self.mean.shape[2]), np.float32)
        if keep1 > keep0:
            src = self._physical(keep0 - self.row0, keep1 - self.row0)
            new_mean[:, keep0 - new0:keep1 - new0] = self.mean[:, src]
            new_weight[keep0 - new0:keep1 - new0] = self.weight[src]
        self.mean, self.weight, self.head = new_mean, new_weight, 0
        if new_height != height:
            self._scratch = np.empty((new_height, self.window.shape[0]), np.float32)
        self.row0 = new0

    def _spans(self, r0: int, r1: int) -> list[tuple[int, int]]:
        """Physical row slices of logical rows [r0, r1): one, or two where the ring wraps."""
        height = self.mean.shape[1]
        start = (r0 + self.head) % height
        stop = start + (r1 - r0)
        if stop <= height:
            return [(start, stop)]
        return [(start, height), (0, stop - height)]
