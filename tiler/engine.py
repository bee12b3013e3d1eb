"""The streaming engine: source windows -> patches -> network -> blender -> finished blocks.

It walks the global patch grid column band by column band and, inside each,
strip by strip from the top; reads each strip's pixels (the next one in a
background thread), predicts its patches in batches, blends them into the
rolling accumulator and yields the rows that are final as a :class:`Block`.
Only one strip of one column band (plus its halo) is in memory at a time. The
engine never touches a file: sinks (:mod:`tiler.sinks`) consume the blocks.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

import numpy as np
from rasterio.windows import Window

from tiler.blend import Accumulator
from tiler.plan import ColumnBand, PatchGrid, RowBand, Strip

if TYPE_CHECKING:  # the network stage loads Keras; blocks and sinks do not need it
    from tiler.model._predictor import Predictor

__all__ = ["Block", "PatchStats", "ProgressCallback", "ReadFunction", "blend_patches", "stream"]

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``, counted in patches."""

ReadFunction = Callable[[tuple[int, int], tuple[int, int]], tuple[np.ndarray, np.ndarray]]
"""``read(rows, cols) -> (bands (channel, row, col) float32, valid (row, col) bool)``,
reflect-padded, nodata already filled."""


@dataclass
class PatchStats:
    """Counters and per-stage seconds of a run."""

    predicted: int = 0
    skipped_nodata: int = 0
    seconds: dict = field(default_factory=lambda: {"read": 0.0, "predict": 0.0, "blend": 0.0, "write": 0.0})


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
        if self._class_map is None:
            if self._acc is None:
                raise ValueError("this block has no class map: it carries values only, or the engine has "
                                 "moved on (a block is valid until the next one is requested)")
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


def _batches(todo: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    """Split positions into batches of at most ``size`` that never leave a run of
    patches equally spaced along one patch row (so each batch can be a view)."""
    out: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    for pos in todo:
        if current and (len(current) == size or pos[0] != current[0][0]
                        or (len(current) > 1 and pos[1] - current[-1][1] != current[1][1] - current[0][1])):
            out.append(current)
            current = []
        current.append(pos)
    if current:
        out.append(current)
    return out


def _patch_view(bands: np.ndarray, chunk: list[tuple[int, int]], origin: tuple[int, int], p: int) -> np.ndarray:
    """The patches of ``chunk`` (one patch row, equal column steps) as a read-only view of ``bands``."""
    row, col = chunk[0][0] - origin[0], chunk[0][1] - origin[1]
    step = chunk[1][1] - chunk[0][1] if len(chunk) > 1 else 0
    sc, sr, sx = bands.strides
    shape, strides = (len(chunk), bands.shape[0], p, p), (step * sx, sc, sr, sx)
    if bands.flags.c_contiguous:  # the cheap constructor (as_strided costs ~50 us a call)
        view = np.ndarray(shape, bands.dtype, buffer=bands, offset=row * sr + col * sx, strides=strides)
        view.flags.writeable = False
        return view
    return np.lib.stride_tricks.as_strided(bands[:, row:row + p, col:], shape=shape, strides=strides,
                                           writeable=False)


def blend_patches(
    bands: np.ndarray,
    valid: np.ndarray,
    origin: tuple[int, int],
    positions: Sequence[tuple[int, int]],
    predictor: Predictor,
    acc: Accumulator,
    stats: PatchStats,
    *,
    progress: Optional[Callable[[int], None]] = None,
) -> None:
    """Predict the patches at ``positions`` and blend them into ``acc``, in order.

    Parameters
    ----------
    bands : ndarray of shape (channel, row, col), float32
        Channels of a region, already reflect-padded, nodata already filled.
    valid : ndarray of shape (row, col), bool
        Valid-data mask of the same region.
    origin : tuple of int
        Scene ``(row, col)`` of ``bands[:, 0, 0]``.
    positions : sequence of (int, int)
        Scene ``(row, col)`` of each patch's upper-left pixel, inside the region.
    predictor, acc, stats
        The model, the accumulator, the counters to update.
    progress : callable, optional
        Called with the number of patches handled after each batch.

    Notes
    -----
    A patch with no valid pixel is skipped on purpose and counted in
    ``stats.skipped_nodata``; it contributes no weight. ``stats.seconds``
    gets ``predict`` (network calls with their TTA) and ``blend`` (batching and
    accumulating). Batches stay within runs of equally spaced patches of one
    patch row, so each is a zero-copy strided view of ``bands``.
    """
    p = acc.window.shape[0]
    r0, c0 = origin
    if valid.all():
        todo = list(positions)
    else:
        todo = []
        for row, col in positions:
            if valid[row - r0:row - r0 + p, col - c0:col - c0 + p].any():
                todo.append((row, col))
            else:
                stats.skipped_nodata += 1
    skipped = len(positions) - len(todo)
    if progress is not None and skipped:
        progress(skipped)
    for chunk in _batches(todo, predictor.batch_size):
        t = time.perf_counter()
        # No copy here: the batch is a strided view of the strip; the network
        # (or the host TTA) reads it where it gathers its input anyway.
        view = _patch_view(bands, chunk, origin, p)
        t1 = time.perf_counter()
        preds = predictor(view)
        t2 = time.perf_counter()
        acc.add_batch(preds, [rc[0] for rc in chunk], [rc[1] for rc in chunk])
        stats.seconds["predict"] += t2 - t1
        stats.seconds["blend"] += (t1 - t) + (time.perf_counter() - t2)
        stats.predicted += len(chunk)
        if progress is not None:
            progress(len(chunk))


def stream(
    read: ReadFunction,
    grid: PatchGrid,
    predictor: Predictor,
    window: np.ndarray,
    *,
    strip_rows: int,
    band_width: int,
    stats: PatchStats,
    progress: Optional[ProgressCallback] = None,
    prefetch: bool = True,
    rows: Optional[RowBand] = None,
) -> Iterator[Block]:
    """Blend the whole grid strip by strip and yield every finished block once.

    Parameters
    ----------
    read : callable
        ``read(rows, cols) -> (bands, valid)`` for any scene rectangle (the
        source, :class:`tiler.source.ChannelSource`).
    grid : PatchGrid
    predictor : Predictor
    window : ndarray of shape (patch, patch), float32
    strip_rows, band_width : int
        See :meth:`PatchGrid.strips` and :meth:`PatchGrid.column_bands`.
    stats : PatchStats
        Updated in place; ``seconds["read"]`` counts the background reads.
    progress : callable, optional
        ``progress(done, total)`` in patches.
    prefetch : bool, default True
        Read the next strip in a background thread while the current one is
        predicted (``False``: read in turn, e.g. to time the blend alone).
    rows : RowBand, optional
        Only this row band of the grid (a part of a distributed run, from
        :meth:`PatchGrid.row_bands` with the same ``strip_rows``): its rows
        are bit-identical to the same rows of a whole-scene stream.

    Yields
    ------
    Block
        Column band by column band (left to right), strips top to bottom:
        every output pixel (of the row band) in exactly one block. A block is valid until the
        next one is requested.
    """
    col_bands = list(grid.column_bands(band_width))
    strips = list(grid.strips(strip_rows, rows))
    total = sum(len(s.patch_rows) for s in strips) * sum(len(b.patch_cols) for b in col_bands)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def timed_read(strip: Strip, band: ColumnBand):
        t = time.perf_counter()
        data, valid = read(strip.read_rows, band.read_cols)
        return data, valid, time.perf_counter() - t

    jobs = [(s, b) for b in col_bands for s in strips]
    acc: Optional[Accumulator] = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiler-read") as reader:
        pending = reader.submit(timed_read, *jobs[0]) if prefetch else None
        try:
            for n, (strip, band) in enumerate(jobs):
                if pending is None:
                    data, valid, seconds = timed_read(strip, band)
                else:
                    data, valid, seconds = pending.result()
                stats.seconds["read"] += seconds
                if prefetch and n + 1 < len(jobs):  # read the next strip while this one is predicted
                    pending = reader.submit(timed_read, *jobs[n + 1])
                t = time.perf_counter()
                if strip.index == 0:
                    acc = None  # free the previous column band's accumulator before allocating the next
                    acc = Accumulator(predictor.classes, strip.read_rows, band.read_cols, window)
                else:
                    acc.roll(strip.read_rows)
                stats.seconds["blend"] += time.perf_counter() - t
                positions = [(grid.rows.origin(i), grid.cols.origin(j))
                             for i in strip.patch_rows for j in band.patch_cols]
                blend_patches(data, valid, (strip.read_rows[0], band.read_cols[0]), positions,
                              predictor, acc, stats, progress=tick)
                (e0, e1), (c0, c1) = strip.emit_rows, band.emit_cols
                if e1 > e0:
                    r, c = e0 - strip.read_rows[0], c0 - band.read_cols[0]
                    block = Block((e0, e1), (c0, c1), valid[r:r + e1 - e0, c:c + c1 - c0], accumulator=acc,
                                  seconds=stats.seconds)
                    yield block
                    # The consumer asked for the next block: this one's rows are about to be
                    # rolled out, and a column band's accumulator must be freeable before
                    # the next band's is allocated (flat memory).
                    block.detach()
        finally:
            if pending is not None:
                pending.cancel()
