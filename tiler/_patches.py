"""Cutting patches from a padded array, predicting them and accumulating them.

Shared by the in-memory :func:`tiler.predict` and the streaming engine: both
blend the same patches of the same global grid; they differ only in how much
of the scene they hold at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from tiler.blend import Accumulator
from tiler.model._predictor import Predictor

__all__ = ["PatchStats", "blend_patches"]

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``, counted in patches."""


@dataclass
class PatchStats:
    """Counters and per-stage seconds of a run."""

    predicted: int = 0
    skipped_nodata: int = 0
    seconds: dict = field(default_factory=lambda: {"read": 0.0, "predict": 0.0, "blend": 0.0, "write": 0.0})


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
    """Predict the patches at ``positions`` and add them to ``acc``.

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
        The model, the accumulator to add to, the counters to update.
    progress : callable, optional
        Called with the number of patches handled after each batch.

    Notes
    -----
    A patch with no valid pixel is skipped on purpose and counted in
    ``stats.skipped_nodata``; it then contributes no weight.
    """
    p = acc.window.shape[0]
    r0, c0 = origin
    todo = []
    for row, col in positions:
        if valid[row - r0:row - r0 + p, col - c0:col - c0 + p].any():
            todo.append((row, col))
        else:
            stats.skipped_nodata += 1
    skipped = len(positions) - len(todo)
    if progress is not None and skipped:
        progress(skipped)
    batch = predictor.batch_size
    buf = np.empty((min(batch, len(todo)), bands.shape[0], p, p), np.float32)
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        for k, (row, col) in enumerate(chunk):
            buf[k] = bands[:, row - r0:row - r0 + p, col - c0:col - c0 + p]
        t = time.perf_counter()
        pred = predictor(buf[:len(chunk)])
        t2 = time.perf_counter()
        for k, (row, col) in enumerate(chunk):
            acc.add(pred[k], row, col)
        stats.seconds["predict"] += t2 - t
        stats.seconds["blend"] += time.perf_counter() - t2
        stats.predicted += len(chunk)
        if progress is not None:
            progress(len(chunk))
