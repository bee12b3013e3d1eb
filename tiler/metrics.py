"""Segmentation metrics: confusion matrix, per-class IoU (Jaccard) and Dice."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from tiler.labels import IGNORE

__all__ = ["confusion_matrix", "scores"]


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, classes: int, *,
                     ignore: int = IGNORE) -> np.ndarray:
    """Count (truth, prediction) pairs.

    Parameters
    ----------
    pred, truth : ndarray of shape (row, col), integer
        Predicted and true class index per pixel. Pixels where ``truth`` is
        ``ignore`` (unlabelled) or ``pred`` is outside ``0..classes-1``
        (output nodata) are not counted.
    classes : int
        Number of classes K.

    Returns
    -------
    ndarray of shape (K, K), int64
        ``cm[t, p]`` = pixels of true class t predicted as p.

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    t = truth.astype(np.int64).ravel()
    p = pred.astype(np.int64).ravel()
    keep = (t != ignore) & (t >= 0) & (t < classes) & (p >= 0) & (p < classes)
    return np.bincount(t[keep] * classes + p[keep], minlength=classes * classes).reshape(classes, classes)


def scores(cm: np.ndarray, names: Optional[Sequence[str]] = None) -> dict:
    """Per-class and mean IoU (Jaccard) and Dice, and pixel accuracy.

    Parameters
    ----------
    cm : ndarray of shape (K, K)
        Confusion matrix from :func:`confusion_matrix`.
    names : sequence of str, optional
        Class names (default ``class_0`` ...).

    Returns
    -------
    dict
        ``iou`` and ``dice`` (name -> value, None for a class absent from
        both truth and prediction), ``mean_iou`` and ``mean_dice`` over the
        classes that are defined, ``pixel_accuracy``, ``pixels`` and the
        ``confusion_matrix`` as nested lists.

    Notes
    -----
    IoU_k = TP / (TP + FP + FN); Dice_k = 2 TP / (2 TP + FP + FN), with TP the
    diagonal, FP the column sums less TP and FN the row sums less TP.
    """
    cm = np.asarray(cm, np.int64)
    k = cm.shape[0]
    names = list(names) if names is not None else [f"class_{i}" for i in range(k)]
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    iou, dice = {}, {}
    for i, n in enumerate(names):
        denom = tp[i] + fp[i] + fn[i]
        iou[n] = float(tp[i] / denom) if denom > 0 else None
        dice[n] = float(2 * tp[i] / (2 * tp[i] + fp[i] + fn[i])) if denom > 0 else None
    defined_iou = [v for v in iou.values() if v is not None]
    defined_dice = [v for v in dice.values() if v is not None]
    total = cm.sum()
    return {
        "iou": iou,
        "dice": dice,
        "mean_iou": float(np.mean(defined_iou)) if defined_iou else None,
        "mean_dice": float(np.mean(defined_dice)) if defined_dice else None,
        "pixel_accuracy": float(tp.sum() / total) if total else None,
        "pixels": int(total),
        "confusion_matrix": cm.tolist(),
        "classes": names,
    }
