"""Window-weighted blending of patch predictions (NumPy)."""

from __future__ import annotations

import numpy as np

from tiler.errors import PlanError

__all__ = ["Accumulator"]


class Accumulator:
    """Window-weighted mean of patch predictions over a rectangle of the reference grid.

    Holds the running weighted mean per class and the weight sum per pixel
    for the rows ``[row0, row0 + height)`` and columns ``[col0, col0 + width)``
    (scene pixels; negative or past-the-edge positions are the reflect-padded
    border). Used as a whole-scene accumulator by :func:`tiler.predict` and as
    the rolling strip accumulator of the streaming engine, where
    :meth:`roll` moves it down the scene keeping the rows still open.

    Parameters
    ----------
    classes : int
        Number of output classes K.
    rows, cols : tuple of int
        ``(start, stop)`` extent in scene pixels.
    window : ndarray of shape (patch, patch), float32
        The blending window, strictly positive.

    Notes
    -----
    The mean is updated incrementally (West's weighted update),

    .. math::

        W \\leftarrow W + w, \\qquad m \\leftarrow m + \\frac{w}{W}(p - m),

    which equals ``sum(w p) / sum(w)`` up to float32 rounding, and is *exact*
    where the predictions agree (``p - m = 0``): a model predicting a constant c
    yields exactly c, whatever the window (DESIGN.md, invariant 2). The first
    patch at a pixel sets ``m = p`` exactly (``w / W = 1``).

    Memory is ``(K + 1) * height * width * 4`` bytes.

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
        self.window = np.asarray(window, dtype=np.float32)
        self.col0, col1 = cols
        self.row0 = rows[0]
        self.mean = np.zeros((classes, rows[1] - rows[0], col1 - self.col0), np.float32)
        self.weight = np.zeros(self.mean.shape[1:], np.float32)

    @property
    def rows(self) -> tuple[int, int]:
        """``(start, stop)`` scene rows held."""
        return self.row0, self.row0 + self.mean.shape[1]

    def add(self, prediction: np.ndarray, row: int, col: int) -> None:
        """Add one patch prediction, weighted by the window.

        Parameters
        ----------
        prediction : ndarray of shape (K, patch, patch), float32
            Class probabilities of the patch.
        row, col : int
            Scene position of the patch's upper-left pixel.
        """
        p = self.window.shape[0]
        r, c = row - self.row0, col - self.col0
        weight = self.weight[r:r + p, c:c + p]
        weight += self.window
        mean = self.mean[:, r:r + p, c:c + p]
        mean += (self.window / weight) * (prediction - mean)

    def normalised(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Blended probabilities of a sub-rectangle.

        Parameters
        ----------
        rows, cols : tuple of int
            ``(start, stop)`` in scene pixels, inside the accumulator.

        Returns
        -------
        ndarray of shape (K, rows, cols), float32
            Weighted mean per pixel (a copy); 0 where no patch contributed.
        """
        r0, r1 = rows[0] - self.row0, rows[1] - self.row0
        c0, c1 = cols[0] - self.col0, cols[1] - self.col0
        return self.mean[:, r0:r1, c0:c1].copy()

    def roll(self, rows: tuple[int, int]) -> None:
        """Move the accumulator to new rows, keeping the rows both extents share.

        Rows that leave are dropped (they must have been emitted); new rows
        start at zero.
        """
        new0, new1 = rows
        keep0, keep1 = max(new0, self.row0), min(new1, self.rows[1])
        height = new1 - new0
        if height == self.mean.shape[1] and new0 == self.row0:
            return
        new_mean = np.zeros((self.classes, height, self.mean.shape[2]), np.float32)
        new_weight = np.zeros((height, self.mean.shape[2]), np.float32)
        if keep1 > keep0:
            new_mean[:, keep0 - new0:keep1 - new0] = self.mean[:, keep0 - self.row0:keep1 - self.row0]
            new_weight[keep0 - new0:keep1 - new0] = self.weight[keep0 - self.row0:keep1 - self.row0]
        self.mean, self.weight, self.row0 = new_mean, new_weight, new0
