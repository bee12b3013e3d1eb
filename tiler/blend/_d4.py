"""Dihedral (D4) test-time augmentation: the 8 rotations and mirrors of a patch."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

from tiler.blend import _kernels
from tiler.errors import PlanError

__all__ = ["TTA_TRANSFORMS", "TTA_MEANS", "d4_transform", "d4_inverse", "d4_expand", "d4_merge"]

#: Transforms of each test-time augmentation mode. Transform t rotates by
#: ``t % 4`` quarter turns counter-clockwise (``np.rot90`` on the (row, col)
#: axes) and then mirrors the columns if ``t >= 4``; 0 is the identity.
TTA_TRANSFORMS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"none": (0,), "flip": (0, 4), "d4": tuple(range(8))}
)
#: How the de-transformed predictions are averaged.
TTA_MEANS = ("arithmetic", "geometric")


def d4_transform(a: np.ndarray, t: int) -> np.ndarray:
    """Apply dihedral transform ``t`` (0..7) to the last two axes (a view).

    Parameters
    ----------
    a : ndarray of shape (..., row, col)
    t : int
        ``np.rot90(a, t % 4, axes=(-2, -1))``, then mirror the columns if ``t >= 4``.

    Returns
    -------
    ndarray
    """
    out = np.rot90(a, t % 4, axes=(-2, -1))
    return out[..., ::-1] if t >= 4 else out


def d4_inverse(a: np.ndarray, t: int) -> np.ndarray:
    """Undo :func:`d4_transform` ``t`` on the last two axes (a view)."""
    if t >= 4:
        a = a[..., ::-1]
    return np.rot90(a, -(t % 4), axes=(-2, -1))


def _transforms(tta: str) -> np.ndarray:
    try:
        return np.asarray(TTA_TRANSFORMS[tta], np.int64)
    except KeyError:
        raise PlanError(f"unknown test-time augmentation {tta!r}; choose {', '.join(TTA_TRANSFORMS)}") from None


def d4_expand(batch: np.ndarray, tta: str = "d4") -> np.ndarray:
    """All variants of a batch for a TTA mode, in one numba pass.

    Parameters
    ----------
    batch : ndarray of shape (patch_count, channel, patch, patch), float32
    tta : {"none", "flip", "d4"}

    Returns
    -------
    ndarray of shape (T * patch_count, channel, patch, patch), float32
        Variant ``t`` of patch ``n`` at ``t * patch_count + n``; T = 1, 2 or 8.

    Raises
    ------
    PlanError
        For an unknown mode or non-square patches.
    """
    ts = _transforms(tta)
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or batch.shape[2] != batch.shape[3]:
        raise PlanError(f"D4 needs square patches (n, channel, p, p), got {batch.shape}")
    out = np.empty((len(ts) * batch.shape[0],) + batch.shape[1:], np.float32)
    _kernels.d4_expand(batch, ts, out)
    return out


def d4_merge(predictions: np.ndarray, tta: str = "d4", *, mean: str = "arithmetic") -> np.ndarray:
    """Undo each variant's transform and average, in one numba pass.

    Parameters
    ----------
    predictions : ndarray of shape (T * patch_count, K, patch, patch), float32
        Predictions of the variants made by :func:`d4_expand`, same order.
    tta : {"none", "flip", "d4"}
    mean : {"arithmetic", "geometric"}
        Arithmetic mean of probabilities, or geometric mean
        ``exp(mean(log(max(p, GEOMETRIC_EPSILON))))`` (not renormalised here).

    Returns
    -------
    ndarray of shape (patch_count, K, patch, patch), float32
    """
    ts = _transforms(tta)
    if mean not in TTA_MEANS:
        raise PlanError(f"TTA mean must be one of {', '.join(TTA_MEANS)}, got {mean!r}")
    preds = np.ascontiguousarray(predictions, dtype=np.float32)
    if preds.shape[0] % len(ts):
        raise PlanError(f"{preds.shape[0]} predictions are not a multiple of {len(ts)} variants")
    out = np.empty((preds.shape[0] // len(ts),) + preds.shape[1:], np.float32)
    _kernels.d4_merge(preds, ts, mean == "geometric", out)
    return out
