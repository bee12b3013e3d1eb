"""The way back from the processing grid: finished blocks of probabilities resampled onto the scene's grid.

A run on a processing grid at the model's pixel size (:class:`tiler.scene.ProcessingGrid`) streams finished
blocks of that grid out of the engine. :func:`to_scene_grid` turns them, as they come, into finished blocks of
the scene's reference grid, probabilities resampled (bilinear from a coarser grid, area-weighted from a finer
one, :class:`tiler.scene.AxisMap`) before any class is chosen, so that every sink writes the scene's CRS,
transform and size and the class map is the argmax of the resampled probabilities.

Blocks come column band by column band, strips top to bottom (:func:`tiler.engine.stream`). A scene pixel is
computed with the block holding its last tap; the few processing rows (columns) it takes from the block above
(to the left) are kept from that block: the last rows of the previous block of the column band, the last
columns of every block of the previous column band. Memory: those rows and columns, nothing of the scene.
"""

from __future__ import annotations

import time
from typing import Iterator, Optional

import numpy as np

from tiler.engine import Block
from tiler.scene import AxisMap, ProcessingGrid

__all__ = ["to_scene_grid", "scene_rows"]


def scene_rows(grid: ProcessingGrid, rows: tuple[int, int], *, rows_map: Optional[AxisMap] = None) -> tuple[int, int]:
    """The scene rows computed from processing rows ``rows`` (a part's ``emit_rows``).

    Parameters
    ----------
    grid : ProcessingGrid
    rows : tuple of int
        ``(start, stop)`` processing rows.
    rows_map : AxisMap, optional
        ``grid.rows()``, where the caller has it.

    Returns
    -------
    tuple of int
        ``(start, stop)`` scene rows; the rows of consecutive parts partition the scene's rows.
    """
    if not grid.resampled:
        return rows
    rows_map = rows_map if rows_map is not None else grid.rows()
    return rows_map.span(rows[0], rows[1], grid.height)


def to_scene_grid(blocks, grid: ProcessingGrid, *, rows: Optional[tuple[int, int]] = None,
                  seconds: Optional[dict] = None) -> Iterator[Block]:
    """Resample finished blocks of the processing grid onto the scene's grid, streaming.

    Parameters
    ----------
    blocks : iterable of Block
        Of the processing grid, in the engine's order (column bands left to right, strips top to bottom
        within each), with values (probabilities, NaN where not valid). Where ``rows`` is given, they start
        :attr:`AxisMap.reach` rows above ``rows[0]`` (a part streamed with
        :meth:`tiler.plan.PatchGrid.widened`).
    grid : ProcessingGrid
        Resampled (``grid.resampled``).
    rows : tuple of int, optional
        The processing rows whose scene rows to emit (a part's ``emit_rows``); default all.
    seconds : dict, optional
        ``seconds["regrid"]`` gets the time spent here.

    Yields
    ------
    Block
        Of the scene's grid, with values (float32, NaN where not valid) and a valid mask: a scene pixel is
        valid where the processing pixel holding its centre is (the processing grid's reads count a pixel
        valid only where every scene pixel it averages is). Every scene pixel of the rows in exactly one block.

    Notes
    -----
    Each value is ``sum_k w_k p_k / sum_k w_k`` over the valid taps of the separable resampling (taps in a
    fixed order): the same bits whatever the strips, column bands or parts.
    """
    yield from _Regrid(grid, rows, seconds).run(blocks)


class _Regrid:
    """The state of :func:`to_scene_grid`: the rows kept from the block above, the columns from the band to the
    left."""

    def __init__(self, grid: ProcessingGrid, rows: Optional[tuple[int, int]], seconds: Optional[dict]) -> None:
        self.grid = grid
        self.rmap, self.cmap = grid.rows(), grid.cols()
        self.scene = scene_rows(grid, rows or (0, grid.height), rows_map=self.rmap)
        self.seconds = seconds
        self.band: Optional[tuple[int, int]] = None
        self.top = None  # (values, valid, first processing row) of the last rows of the band's previous block
        self.left = None  # {processing row: (values (C, cols), valid (cols,))} of the previous column band
        self.next_left: dict = {}

    def run(self, blocks) -> Iterator[Block]:
        for block in blocks:
            t = time.perf_counter()
            out = self._block(block)
            if self.seconds is not None:
                self.seconds["regrid"] = self.seconds.get("regrid", 0.0) + time.perf_counter() - t
            if out is not None:
                yield out

    def _start_band(self, cols: tuple[int, int]) -> None:
        if self.band is not None:
            self.left = self.next_left
        self.band, self.top, self.next_left = cols, None, {}

    def _extended(self, block: Block):
        """The block's values and validity with the kept rows above and columns to the left, and their origin."""
        (r0, r1), c0 = block.rows, block.cols[0]
        values = block.values()
        valid = np.asarray(block.valid, bool)
        keep_cols = self.cmap.reach if c0 > 0 and self.left is not None else 0
        if keep_cols:
            lv = np.stack([self.left[r][0] for r in range(r0, r1)], axis=1)
            lm = np.stack([self.left[r][1] for r in range(r0, r1)], axis=0)
            values = np.concatenate([lv, values], axis=2)
            valid = np.concatenate([lm, valid], axis=1)
        row0 = r0
        if self.top is not None:
            tv, tm, row0 = self.top
            values = np.concatenate([tv, values], axis=1)
            valid = np.concatenate([tm, valid], axis=0)
        return values, valid, row0, c0 - keep_cols

    def _keep(self, block: Block, values: np.ndarray, valid: np.ndarray, row0: int) -> None:
        """Keep the last rows for the next block of the band and the last columns for the next band."""
        reach_r, reach_c = self.rmap.reach, self.cmap.reach
        n = min(reach_r, values.shape[1])
        self.top = (values[:, -n:].copy(), valid[-n:].copy(), row0 + values.shape[1] - n) if n else None
        if reach_c:
            (r0, r1) = block.rows
            for r in range(r0, r1):
                k = r - row0
                self.next_left[r] = (values[:, k, -reach_c:].copy(), valid[k, -reach_c:].copy())

    def _block(self, block: Block) -> Optional[Block]:
        if block.cols != self.band:
            self._start_band(block.cols)
        (r0, r1), (c0, c1) = block.rows, block.cols
        values, valid, row0, col0 = self._extended(block)
        self._keep(block, values, valid, row0)
        ys = self.rmap.span(r0, r1, self.grid.height)
        ys = (max(ys[0], self.scene[0]), min(ys[1], self.scene[1]))
        xs = self.cmap.span(c0, c1, self.grid.width)
        if ys[0] >= ys[1] or xs[0] >= xs[1]:
            return None
        out, ok = _resample(values, valid, self.rmap, self.cmap, ys, xs, row0, col0)
        return Block(ys, xs, ok, values=out)


def _resample(values: np.ndarray, valid: np.ndarray, rmap: AxisMap, cmap: AxisMap, ys: tuple[int, int],
              xs: tuple[int, int], row0: int, col0: int) -> tuple[np.ndarray, np.ndarray]:
    """Scene pixels ``ys`` x ``xs`` from processing values whose first row and column are ``row0``, ``col0``."""
    ri, rw = rmap.index[ys[0]:ys[1]] - row0, rmap.weight[ys[0]:ys[1]]
    ci, cw = cmap.index[xs[0]:xs[1]] - col0, cmap.weight[xs[0]:xs[1]]
    if ri.min() < 0 or ci.min() < 0 or ri.max() >= values.shape[1] or ci.max() >= values.shape[2]:
        raise RuntimeError(f"scene rows {ys}, cols {xs} need processing pixels outside the block and what was "
                           "kept of its neighbours: blocks out of the engine's order")
    weight = valid.astype(np.float32)
    data = np.where(valid[None], values, np.float32(0))
    num = sum(rw[None, :, k, None] * data[:, ri[:, k]] for k in range(ri.shape[1]))
    den = sum(rw[:, k, None] * weight[ri[:, k]] for k in range(ri.shape[1]))
    num = sum(cw[:, k] * num[:, :, ci[:, k]] for k in range(ci.shape[1]))
    den = sum(cw[:, k] * den[:, ci[:, k]] for k in range(ci.shape[1]))
    ok = valid[(rmap.nearest[ys[0]:ys[1]] - row0)[:, None], (cmap.nearest[xs[0]:xs[1]] - col0)[None, :]]
    ok = ok & (den > 0)
    out = np.full(num.shape, np.nan, np.float32)
    np.divide(num, den, out=out, where=ok[None])
    return out, ok
