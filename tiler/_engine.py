"""The streaming blend engine shared by `tiler run` and `tiler bench blend`.

It walks the global patch grid column band by column band and, inside each,
strip by strip from the top; reads each strip's pixels (the next one in a
background thread), predicts its patches in batches, blends them into the
rolling accumulator and hands the rows that are final to ``emit``. Only one
strip of one column band (plus its halo) is in memory at a time.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from tiler.blend import Accumulator
from tiler.model._predictor import Predictor
from tiler.plan import ColumnBand, PatchGrid, Strip

__all__ = ["PatchStats", "ProgressCallback", "ReadFunction", "EmitFunction", "blend_patches", "stream"]

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``, counted in patches."""

ReadFunction = Callable[[tuple[int, int], tuple[int, int]], tuple[np.ndarray, np.ndarray]]
"""``read(rows, cols) -> (bands (channel, row, col) float32, valid (row, col) bool)``,
reflect-padded, nodata already filled."""

EmitFunction = Callable[[Accumulator, Strip, ColumnBand, np.ndarray], None]
"""``emit(acc, strip, band, valid)``: called when ``strip.emit_rows`` x
``band.emit_cols`` are final; ``valid`` is the strip's valid mask."""


@dataclass
class PatchStats:
    """Counters and per-stage seconds of a run."""

    predicted: int = 0
    skipped_nodata: int = 0
    seconds: dict = field(default_factory=lambda: {"read": 0.0, "predict": 0.0, "blend": 0.0, "write": 0.0})


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
    emit: EmitFunction,
    *,
    strip_rows: int,
    band_width: int,
    stats: PatchStats,
    progress: Optional[ProgressCallback] = None,
    prefetch: bool = True,
) -> None:
    """Blend the whole grid strip by strip and emit every finished row once.

    Parameters
    ----------
    read : callable
        ``read(rows, cols) -> (bands, valid)`` for any scene rectangle.
    grid : PatchGrid
    predictor : Predictor
    window : ndarray of shape (patch, patch), float32
    emit : callable
        ``emit(acc, strip, band, valid)`` when rows are final.
    strip_rows, band_width : int
        See :meth:`PatchGrid.strips` and :meth:`PatchGrid.column_bands`.
    stats : PatchStats
        Updated in place; ``seconds["read"]`` counts the background reads.
    progress : callable, optional
        ``progress(done, total)`` in patches.
    prefetch : bool, default True
        Read the next strip in a background thread while the current one is
        predicted (``False``: read in turn, e.g. to time the blend alone).
    """
    col_bands = list(grid.column_bands(band_width))
    strips = list(grid.strips(strip_rows))
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
            if strip.emit_rows[1] > strip.emit_rows[0]:
                emit(acc, strip, band, valid)
