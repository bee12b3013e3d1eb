"""Scoring class maps against ground-truth masks (``tiler evaluate``)."""

from __future__ import annotations

import os
import warnings
from typing import Optional, Union

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiler.errors import DatasetError, SceneReadError
from tiler.labels import LabelScheme, read_mask
from tiler.metrics import confusion_matrix, scores
from tiler.output import CLASS_NODATA

__all__ = ["evaluate_masks", "format_table"]

_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _scheme_from_prediction(path: str) -> LabelScheme:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            names = ds.tags().get("TILER_CLASSES")
            if not names:
                raise DatasetError(
                    f"{path!r} carries no class names (not written by `tiler run`); pass --classes"
                )
            cmap = ds.colormap(1)
    names = names.split(",")
    colours = ["#{:02X}{:02X}{:02X}".format(*cmap[i][:3]) for i in range(len(names))]
    return LabelScheme(tuple(names), tuple(colours))


def _pairs(pred: str, truth: str) -> list[tuple[str, str]]:
    if os.path.isdir(pred) != os.path.isdir(truth):
        raise DatasetError("PRED and TRUTH must both be files or both be folders")
    if not os.path.isdir(pred):
        for p in (pred, truth):
            if not os.path.exists(p):
                raise SceneReadError(f"{p!r} does not exist; check the path")
        return [(pred, truth)]
    truth_by_stem = {os.path.splitext(f)[0]: os.path.join(truth, f) for f in os.listdir(truth)
                     if f.lower().endswith(_SUFFIXES)}
    pairs = []
    for f in sorted(os.listdir(pred)):
        stem = os.path.splitext(f)[0]
        if f.lower().endswith(_SUFFIXES) and stem in truth_by_stem:
            pairs.append((os.path.join(pred, f), truth_by_stem[stem]))
    if not pairs:
        raise DatasetError(f"no prediction in {pred!r} has a mask of the same name in {truth!r}")
    return pairs


def evaluate_masks(pred: Union[str, os.PathLike], truth: Union[str, os.PathLike], *,
                   classes: Union[None, str, os.PathLike, LabelScheme] = None) -> dict:
    """Per-class IoU (Jaccard) and Dice, their means, pixel accuracy, confusion matrix.

    Parameters
    ----------
    pred : path-like
        A uint8 class map written by ``tiler run`` (nodata 255 is not
        counted), or a folder of them.
    truth : path-like
        The ground-truth mask (class indices, or class colours), or a folder
        of masks with the same file stems. Pixels in the scheme's ignored
        colours/values are not counted.
    classes : path-like or LabelScheme, optional
        The class scheme; default: class names and colours stored in the
        (first) prediction.

    Returns
    -------
    dict
        :func:`tiler.metrics.scores` over all pairs together, plus ``files``.

    Raises
    ------
    DatasetError, SceneReadError
        For missing or mismatched files.
    """
    pred, truth = os.fspath(pred), os.fspath(truth)
    pairs = _pairs(pred, truth)
    if classes is None:
        scheme = _scheme_from_prediction(pairs[0][0])
    elif isinstance(classes, LabelScheme):
        scheme = classes
    else:
        scheme = LabelScheme.from_file(classes)
    k = len(scheme.names)
    cm = np.zeros((k, k), np.int64)
    for p, t in pairs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(p) as ds:
                    predicted = ds.read(1)
        except RasterioIOError as exc:
            raise SceneReadError(f"cannot read prediction {p!r}: {exc}") from None
        labels = scheme.decode(read_mask(t))
        if predicted.shape != labels.shape:
            raise DatasetError(f"prediction {p!r} is {predicted.shape} but truth {t!r} is {labels.shape}")
        predicted = np.where(predicted == CLASS_NODATA, -1, predicted.astype(np.int64))
        cm += confusion_matrix(predicted, labels, k)
    result = scores(cm, scheme.names)
    result["files"] = [{"pred": p, "truth": t} for p, t in pairs]
    return result


def format_table(result: dict) -> str:
    """Render :func:`evaluate_masks` output as a plain-text table."""

    def fmt(v: Optional[float]) -> str:
        return "   -  " if v is None else f"{v:6.4f}"

    names = result["classes"]
    width = max(8, *(len(n) for n in names))
    lines = [f"{'class':<{width}}  IoU     Dice", "-" * (width + 16)]
    for n in names:
        lines.append(f"{n:<{width}}  {fmt(result['iou'][n])}  {fmt(result['dice'][n])}")
    lines.append("-" * (width + 16))
    lines.append(f"{'mean':<{width}}  {fmt(result['mean_iou'])}  {fmt(result['mean_dice'])}")
    lines.append(f"pixel accuracy {fmt(result['pixel_accuracy'])} over {result['pixels']} labelled pixels")
    lines.append("")
    lines.append("confusion matrix (rows: truth, columns: prediction)")
    lines.append(" " * width + "".join(f"{n[:10]:>12}" for n in names))
    for n, row in zip(names, result["confusion_matrix"]):
        lines.append(f"{n:<{width}}" + "".join(f"{v:>12d}" for v in row))
    return "\n".join(lines)
