"""Batched prediction of patches with a tiler model."""

from __future__ import annotations

import numpy as np

from tiler.errors import PlanError
from tiler.model._file import TilerModel

__all__ = ["Predictor"]


class Predictor:
    """Run a tiler model on batches of patches.

    Normalises each channel as the model's metadata says, moves the batch to
    the Keras backend (and so to the accelerator where there is one), and
    returns class probabilities.

    Parameters
    ----------
    model : TilerModel
        The model and its metadata.
    batch_size : int, default 8
        Patches per call of the network, >= 1.

    Raises
    ------
    PlanError
        If ``batch_size`` < 1.
    """

    def __init__(self, model: TilerModel, *, batch_size: int = 8) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise PlanError(f"batch size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = int(batch_size)
        info = model.info
        self._offset = np.asarray(info.offset, np.float32)[None, None, None, :]
        self._inv_scale = (1.0 / np.asarray(info.scale, np.float64)).astype(np.float32)[None, None, None, :]

    @property
    def classes(self) -> int:
        """Number of output classes K."""
        return len(self.model.info.classes)

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Predict class probabilities.

        Parameters
        ----------
        patches : ndarray of shape (patch, channel, row, col), float32
            Channels as read from the scene (not yet normalised), in the
            model's channel order.

        Returns
        -------
        ndarray of shape (patch, K, row, col), float32
        """
        n = patches.shape[0]
        out = np.empty((n, self.classes) + patches.shape[2:], np.float32)
        for start in range(0, n, self.batch_size):
            chunk = np.transpose(patches[start:start + self.batch_size], (0, 2, 3, 1))
            chunk = (chunk - self._offset) * self._inv_scale
            pred = self.model.keras_model.predict_on_batch(np.ascontiguousarray(chunk, np.float32))
            out[start:start + self.batch_size] = np.transpose(np.asarray(pred, np.float32), (0, 3, 1, 2))
        return out
