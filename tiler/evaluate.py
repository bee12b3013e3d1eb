"""Scoring class maps against ground-truth masks (``tiler evaluate``)."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from tiler._logging import notice
from tiler.errors import DatasetError, SceneReadError
from tiler.labels import IGNORE, LabelScheme, read_mask
from tiler.metrics import confusion_matrix, scores
from tiler.output import CLASS_NODATA

__all__ = ["evaluate_masks", "format_table"]

log = logging.getLogger(__name__)

_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _prediction_classes(path: str) -> Optional[LabelScheme]:
    """The classes a prediction says it holds: its ``TILER_CLASSES`` tag with its colour table; None without a tag.

    Raises
    ------
    SceneReadError
        If the prediction cannot be opened.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                names = ds.tags().get("TILER_CLASSES")
                if not names:
                    return None
                try:
                    cmap = ds.colormap(1)
                except ValueError:  # no colour table
                    cmap = None
    except RasterioIOError as exc:
        raise SceneReadError(f"cannot read prediction {path!r}: {exc}") from None
    split = tuple(names.split(","))
    if cmap is None:
        return LabelScheme(split, tuple(f"#{i:06X}" for i in range(len(split))))
    colours = tuple("#{:02X}{:02X}{:02X}".format(*cmap[i][:3]) for i in range(len(split)))
    return LabelScheme(split, colours)


def _check_scheme(scheme: LabelScheme, pred: str, source: str) -> None:
    """Refuse a class scheme that contradicts the classes the prediction itself records.

    Raises
    ------
    DatasetError
        If ``pred`` carries class names (``TILER_CLASSES``) other than ``scheme``'s.
    """
    own = _prediction_classes(pred)
    if own is not None and own.names != scheme.names:
        raise DatasetError(
            f"{source} has classes [{', '.join(scheme.names)}] but prediction {pred!r} was written with classes "
            f"[{', '.join(own.names)}] (its TILER_CLASSES tag); its own classes are authoritative: drop --classes, "
            "or pass the class file of the model that wrote it")


def _scheme_from_prediction(path: str) -> LabelScheme:
    scheme = _prediction_classes(path)
    if scheme is None:
        raise DatasetError(
            f"{path!r} carries no class names (not written by `tiler run`); pass --classes CLASS_FILE "
            "(a JSON file of class names and colours, e.g. examples/dubai_classes.json)")
    return scheme


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


#: Largest fraction of ignored truth pixels, or of prediction values that are
#: no class, scored without ``allow_ignored``: beyond it a score would describe
#: the pixels left, not the scene.
MAX_IGNORED_FRACTION = 0.01


def _binary_hint(mask: np.ndarray, scheme: LabelScheme, path: str) -> None:
    """Refuse a two-valued truth mask whose values are not the scheme's, naming the fix."""
    if mask.shape[0] != 1 or scheme.values:
        return
    values = np.unique(mask[0])
    if values.size == 2 and not all(0 <= v < len(scheme.names) for v in values):
        a, b = (int(v) for v in values)
        raise DatasetError(
            f"truth mask {path!r} is binary (values {a} and {b}), which are not the class indices "
            f"0..{len(scheme.names) - 1} of {', '.join(scheme.names)}; map them explicitly with "
            f"--truth-values (one value per class in class order, e.g. --truth-values {a},{b}) or a "
            "'value' per class in the class file")


def evaluate_masks(pred: Union[str, os.PathLike], truth: Union[str, os.PathLike], *,
                   classes: Union[None, str, os.PathLike, LabelScheme] = None,
                   truth_values: Optional[Sequence[int]] = None,
                   allow_ignored: bool = False) -> dict:
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
    truth_values : sequence of int, optional
        Integer truth-mask value of each class, in class order (``0, 255`` for
        a 0/255 footprint mask scored with classes ``background, building``).
    allow_ignored : bool, default False
        Score even when more than 1 % of the truth pixels are ignored or of
        the prediction's values are no class.

    Returns
    -------
    dict
        :func:`tiler.metrics.scores` over all pairs together, plus ``files``
        and ``excluded``: truth pixels ignored, prediction nodata pixels and
        prediction values that are no class (counts and fractions).

    Raises
    ------
    DatasetError, SceneReadError
        For missing or mismatched files; a binary truth mask whose values are
        not mapped to classes; more than 1 % of the pixels ignored or no class
        without ``allow_ignored``.
    """
    pred, truth = os.fspath(pred), os.fspath(truth)
    pairs = _pairs(pred, truth)
    if classes is None:
        scheme = _scheme_from_prediction(pairs[0][0])
    elif isinstance(classes, LabelScheme):
        scheme = classes
    else:
        scheme = LabelScheme.from_file(classes)
    if classes is not None:
        source = f"class file {os.fspath(classes)!r}" if not isinstance(classes, LabelScheme) else "--classes"
        for p, _ in pairs:
            _check_scheme(scheme, p, source)
    if truth_values is not None:
        scheme = scheme.with_values(truth_values)
    k = len(scheme.names)
    cm = np.zeros((k, k), np.int64)
    total = ignored = nodata = outside = 0
    outside_values: set[int] = set()
    for p, t in pairs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(p) as ds:
                    predicted = ds.read(1)
        except RasterioIOError as exc:
            raise SceneReadError(f"cannot read prediction {p!r}: {exc}") from None
        mask = read_mask(t)
        _binary_hint(mask, scheme, t)
        labels = scheme.decode(mask, fix=(
            "add them to the class file" if classes is not None else
            "the scheme came from the prediction's own classes and colours: pass --classes with a class file "
            "whose colours are the truth masks' (e.g. examples/dubai_classes.json)"))
        if predicted.shape != labels.shape:
            raise DatasetError(f"prediction {p!r} is {predicted.shape} but truth {t!r} is {labels.shape}")
        total += labels.size
        ignored += int(np.count_nonzero(labels == IGNORE))
        is_nodata = predicted == CLASS_NODATA
        nodata += int(np.count_nonzero(is_nodata))
        no_class = ~is_nodata & (predicted >= k)
        if no_class.any():
            outside += int(np.count_nonzero(no_class))
            outside_values.update(np.unique(predicted[no_class]).tolist())
        predicted = np.where(is_nodata | no_class, -1, predicted.astype(np.int64))
        cm += confusion_matrix(predicted, labels, k)
    excluded = {"pixels": total, "truth_ignored": ignored, "truth_ignored_fraction": ignored / max(total, 1),
                "prediction_nodata": nodata, "prediction_no_class": outside,
                "prediction_no_class_fraction": outside / max(total, 1),
                "prediction_no_class_values": sorted(int(v) for v in outside_values)}
    log.info("excluded: %d of %d truth pixels ignored, %d prediction nodata, %d prediction values no class",
             ignored, total, nodata, outside)
    # Colours or values the class file declares as ignored are ignored on purpose: reported, never refused.
    declared = bool(scheme.ignore_colours) or tuple(scheme.ignore_values) != (IGNORE,)
    excluded["truth_ignored_declared"] = declared
    if declared and ignored:
        notice(log, "%.2f %% of the truth pixels are ignored, as the class file declares (colours %s, values %s)",
               100 * excluded["truth_ignored_fraction"], list(scheme.ignore_colours), list(scheme.ignore_values))
    if not allow_ignored:
        problems = []
        if excluded["truth_ignored_fraction"] > MAX_IGNORED_FRACTION and not declared:
            problems.append(f"{excluded['truth_ignored_fraction']:.1%} of the truth pixels are ignored (values "
                            f"{list(scheme.ignore_values)} or colours {list(scheme.ignore_colours)}); if they are a "
                            "class, map them with --truth-values or the class file")
        if excluded["prediction_no_class_fraction"] > MAX_IGNORED_FRACTION:
            problems.append(f"{excluded['prediction_no_class_fraction']:.1%} of the prediction's pixels have values "
                            f"{excluded['prediction_no_class_values'][:10]} that are no class of "
                            f"{', '.join(scheme.names)}; check --classes")
        if problems:
            raise DatasetError("; ".join(problems) + ". Pass --allow-ignored to score the remaining pixels anyway")
    result = scores(cm, scheme.names)
    result["files"] = [{"pred": p, "truth": t} for p, t in pairs]
    result["excluded"] = excluded
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
    ex = result.get("excluded")
    if ex:
        lines.append(f"not scored: {ex['truth_ignored']} ignored truth pixels ({ex['truth_ignored_fraction']:.2%}), "
                     f"{ex['prediction_nodata']} prediction nodata, {ex['prediction_no_class']} prediction values "
                     f"that are no class ({ex['prediction_no_class_fraction']:.2%})")
    lines.append("")
    lines.append("confusion matrix (rows: truth, columns: prediction)")
    lines.append(" " * width + "".join(f"{n[:10]:>12}" for n in names))
    for n, row in zip(names, result["confusion_matrix"]):
        lines.append(f"{n:<{width}}" + "".join(f"{v:>12d}" for v in row))
    return "\n".join(lines)
