"""The in-memory twin of a run: an array through the streaming engine."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional, Union

import numpy as np

from tiler.blend import get_window
from tiler.config import (
    DEFAULT_BAND_WIDTH,
    DEFAULT_STRIP_ROWS,
    InferenceConfig,
    split_options,
)
from tiler.engine import PatchStats, stream
from tiler.errors import BandMismatchError
from tiler.model import Predictor, TilerModel
from tiler.pipeline._resolve import check_patch_size, resolve_model
from tiler.plan import PatchGrid
from tiler.source import ArraySource

log = logging.getLogger(__name__)


def predict(
    image: np.ndarray,
    *,
    model: Union[None, str, os.PathLike, TilerModel] = None,
    inference: Optional[InferenceConfig] = None,
    valid: Optional[np.ndarray] = None,
    **options: Any,
) -> np.ndarray:
    """Blend patch predictions over a whole in-memory image, through the streaming engine.

    The in-memory counterpart of :func:`run_scene`: the image is the engine's source
    (:class:`tiler.source.ArraySource`), so the same global patch grid, reflect padding, nodata fill,
    batching and window give the same probabilities as a run of the same pixels.

    Parameters
    ----------
    image : ndarray of shape (channel, row, col)
        The model's input channels in its order, as read from the scene (the
        model's normalisation is applied here). Any real dtype; computed in
        float32.
    model : path-like or TilerModel, optional
        Default: the model shipped with tiler.
    inference : InferenceConfig, optional
        Patch size, overlap, window (default: the model's recommendation), batch size, TTA, runtime,
        precision.
    valid : ndarray of shape (row, col), bool, optional
        Valid-data mask; invalid pixels are filled before prediction and are
        NaN in the result.
    **options
        Fields of :class:`~tiler.config.InferenceConfig` by name (``overlap=0.5``, ``runtime="keras"``),
        applied over ``inference``.

    Returns
    -------
    ndarray of shape (class, row, col), float32
        Blended class probabilities.

    Raises
    ------
    BandMismatchError
        If ``image`` has another number of channels than the model.
    PlanError, UsageError
        For a bad patch size, overlap, batch size or another option.
    """
    tm = resolve_model(model)
    image = np.asarray(image)
    if image.ndim != 3:
        raise BandMismatchError(f"image must have shape (channel, row, col), got {image.shape}")
    if image.shape[0] != len(tm.info.channels):
        raise BandMismatchError(
            f"image has {image.shape[0]} channel(s) but the model needs "
            f"{len(tm.info.channels)} ({', '.join(tm.info.channels)})"
        )
    inference = split_options(options, inference or InferenceConfig())[0].for_model(tm.info)
    p = check_patch_size(tm.info, inference.patch_size)
    _, height, width = image.shape
    grid = PatchGrid.from_overlap(height, width, patch_size=p, overlap=inference.overlap)
    predictor = Predictor(tm, **inference.network_options())
    out = np.empty((predictor.classes, height, width), np.float32)
    source = ArraySource(image, valid, fill=tm.info.offset)
    for block in stream(source, grid, predictor, get_window(inference.window, p), strip_rows=DEFAULT_STRIP_ROWS,
                        band_width=DEFAULT_BAND_WIDTH, stats=PatchStats(), prefetch=False):
        (r0, r1), (c0, c1) = block.rows, block.cols
        dst = out[:, r0:r1, c0:c1]
        values = block.values(out=dst)
        if values is not dst:
            dst[...] = values
    return out
