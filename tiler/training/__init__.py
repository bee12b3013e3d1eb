"""Training above the engine: data (rasters and vector labels), the loop, the inference settings it recommends.

It sits above :mod:`tiler.pipeline` (validation predicts whole images through
the same blending engine as ``tiler run``), which sits above :mod:`tiler.model`;
nothing below imports it. ``tiler train`` calls :func:`train` with a
:class:`TrainConfig`; ``tiler tune`` calls :func:`tune` (optuna, a fresh process
per trial) with a :class:`TuneConfig` and a search space (:data:`DEFAULT_SPACE`,
:func:`load_space`). Names load on first use (PEP 562), so importing the
package costs nothing until one is used.
"""

from typing import TYPE_CHECKING

from tiler._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "_config",
    "LabelledImage": "_data",
    "train": "_train",
    "checkpoint_folder": "_checkpoint",
    "find_pairs": "_data",
    "find_images": "_data",
    "load_labelled": "_data",
    "training_domain": "_data",
    "evaluate_images": "_train",
    "RECOMMENDED_PATCH_FACTOR": "_config",
    "RECOMMENDED_OVERLAP": "_config",
    "RECOMMENDED_WINDOW": "_config",
    "LOSSES": "_config",
    "VectorLabels": "_vector_labels",
    "DEFAULT_SPACE": "_space",
    "Param": "_space",
    "load_space": "_space",
    "TuneConfig": "_tune",
    "tune": "_tune",
    "PRUNERS": "_tune",
}

_, __getattr__, __dir__ = lazy_exports("tiler.training", _EXPORTS)

__all__ = ["DEFAULT_SPACE", "LOSSES", "LabelledImage", "PRUNERS", "Param", "RECOMMENDED_OVERLAP",
           "RECOMMENDED_PATCH_FACTOR", "RECOMMENDED_WINDOW", "TrainConfig", "TuneConfig", "VectorLabels",
           "checkpoint_folder", "evaluate_images", "find_images", "find_pairs", "load_labelled", "load_space",
           "train", "training_domain", "tune"]

if TYPE_CHECKING:  # the names as static analysers and the API reference see them
    from tiler.training._checkpoint import checkpoint_folder
    from tiler.training._config import (
        LOSSES,
        RECOMMENDED_OVERLAP,
        RECOMMENDED_PATCH_FACTOR,
        RECOMMENDED_WINDOW,
        TrainConfig,
    )
    from tiler.training._data import LabelledImage, find_images, find_pairs, load_labelled, training_domain
    from tiler.training._space import DEFAULT_SPACE, Param, load_space
    from tiler.training._train import evaluate_images, train
    from tiler.training._tune import PRUNERS, TuneConfig, tune
    from tiler.training._vector_labels import VectorLabels
