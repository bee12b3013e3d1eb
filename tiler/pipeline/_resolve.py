"""A run resolved once, where it starts: the model's metadata and every option checked against it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from tiler.blend import get_window
from tiler.config import (
    InferenceConfig,
    OutputConfig,
    StreamConfig,
    VectorConfig,
    run_configs,
)
from tiler.errors import PlanError, UsageError
from tiler.model import (
    DEFAULT_MODEL_PATH,
    ModelInfo,
    Predictor,
    TilerModel,
    check_runtime,
    load_model,
    read_info,
    resolve_model_path,
)
from tiler.output import check_creation_options
from tiler.plan import PatchGrid, stride_from_overlap
from tiler.sinks import (
    export_classes,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """A segmentation run resolved once: the model and the options checked against it.

    Built by :func:`resolve_run` where a run starts (the command, :func:`run_scene`,
    :func:`tiler.distributed.run` or :func:`~tiler.distributed.batch`) and passed down as a value, to the
    tasks of a distributed run too (dask pickles it): nothing below re-reads the model's metadata or
    re-checks an option.

    Attributes
    ----------
    model : str or None
        The model file (None for an in-memory model).
    info : ModelInfo
        Its metadata.
    inference : InferenceConfig
        With the patch size, overlap and window resolved for the model (:meth:`InferenceConfig.for_model`).
    streaming : StreamConfig
    output : OutputConfig
    polygons : VectorConfig
    patch_size : int
        The checked patch side, pixels.
    raster, vector : bool
        Which products the run writes.
    stride : int or None
        The checked stride of the patch grid, pixels (None: computed from the overlap).
    creation_options : tuple of (str, str), optional
        The raster's full, checked GeoTIFF creation options (:func:`tiler.output.check_creation_options`), which
        its sink takes as they are.
    """

    model: Optional[str]
    info: ModelInfo
    inference: InferenceConfig
    streaming: StreamConfig
    output: OutputConfig
    polygons: VectorConfig
    patch_size: int
    raster: bool = True
    vector: bool = False
    stride: Optional[int] = None
    creation_options: Optional[tuple] = None

    def option_dicts(self) -> dict:
        """The four configs as JSON-ready dicts (a report's ``options``, a run's fingerprint); ``vector`` is
        None when the run writes no polygons."""
        return {"inference": self.inference.to_dict(), "streaming": self.streaming.to_dict(),
                "output": self.output.to_dict(), "vector": self.polygons.to_dict() if self.vector else None}

    def grid(self, height: int, width: int) -> PatchGrid:
        """The run's patch grid over a scene of ``height`` x ``width`` reference pixels."""
        if self.stride is None:
            return PatchGrid.from_overlap(height, width, patch_size=self.patch_size, overlap=self.inference.overlap)
        return PatchGrid(height, width, self.patch_size, self.stride)


def resolve_run(*, model=None, inference: Optional[InferenceConfig] = None,
                streaming: Optional[StreamConfig] = None, output: Union[None, str, OutputConfig] = None,
                polygons: Optional[VectorConfig] = None, raster: bool = True, vector: bool = False,
                **options: Any) -> RunSpec:
    """Resolve a run's model and options once, before any work (see :class:`RunSpec`).

    Parameters
    ----------
    model : path-like, name, TilerModel or lazy model source, optional
        Default: the bundled model. Its metadata is read without Keras.
    inference, streaming, output, polygons, **options
        As for :func:`run_scene`.
    raster, vector : bool
        Which products the run writes (at least one).

    Returns
    -------
    RunSpec

    Raises
    ------
    UsageError, PlanError, ModelFileError
        Nothing to write, an unknown option, a model that cannot be read, or an option the model cannot take
        (:func:`check_run_options`).
    """
    inference, streaming, output, polygons = run_configs(options, inference, streaming, output, polygons)
    if not raster and not vector:
        raise UsageError("nothing to write: give a GeoTIFF (--out) and/or polygons (--vector)")
    model_path, info = _model_info(model)
    inference = inference.for_model(info)
    p, stride, co = _checked(info, inference, output, polygons, raster=raster, vector=vector)
    return RunSpec(model=model_path, info=info, inference=inference, streaming=streaming, output=output,
                   polygons=polygons, patch_size=p, raster=raster, vector=vector, stride=stride,
                   creation_options=tuple(co.items()) if co is not None else None)


def check_run_options(info: ModelInfo, inference: InferenceConfig, output: OutputConfig, polygons: VectorConfig,
                      *, raster: bool, vector: bool) -> int:
    """Check a run's options against the model before any work; return the patch size.

    ``inference`` is resolved against the model (:meth:`InferenceConfig.for_model`, as
    :func:`resolve_run` does): its patch size, overlap and window are set.

    Raises
    ------
    PlanError, UsageError
        A patch size the model cannot take, a bad overlap or window, creation
        options GDAL refuses, an unknown polygon class.
    """
    return _checked(info, inference, output, polygons, raster=raster, vector=vector)[0]


def _checked(info: ModelInfo, inference: InferenceConfig, output: OutputConfig, polygons: VectorConfig, *,
             raster: bool, vector: bool) -> tuple[int, int, Optional[dict]]:
    """:func:`check_run_options`, returning what the checks computed: ``(patch size, stride, creation options)``."""
    p = check_patch_size(info, inference.patch_size)
    get_window(inference.window, p)
    stride = stride_from_overlap(p, inference.overlap)

    check_runtime(inference.runtime, inference.precision, onnx=info.is_onnx)
    co = None
    if raster:
        co = check_creation_options(dict(output.creation_options), dtype=output.dtype,
                                    count=1 if output.kind == "class" else len(info.classes))
    if vector:
        export_classes(info.classes, polygons.classes)  # an unknown --classes name fails before any work
    return p, stride, co


def check_patch_size(info: ModelInfo, patch_size: Optional[int]) -> int:
    """The patch side a run uses: ``patch_size`` checked against the model, or the model's training patch.

    Parameters
    ----------
    info : ModelInfo
    patch_size : int or None
        Pixels; None: the model's own.

    Returns
    -------
    int
        Pixels.

    Raises
    ------
    PlanError
        Not a positive multiple of ``2**depth``, or not the fixed side of an ONNX graph with fixed sides.
    """
    recommended = int((info.inference or {}).get("patch_size") or info.patch_size)
    sides = (info.network or {}).get("sides")
    if patch_size is None:
        return info.patch_size
    multiple = 2 ** info.depth
    if not isinstance(patch_size, (int, np.integer)) or patch_size < multiple or patch_size % multiple:
        raise PlanError(
            f"patch size {patch_size} is not a positive multiple of 2**depth = {multiple} "
            f"for this model (depth {info.depth}); use e.g. {max(multiple, recommended)}"
        )
    if sides and (sides[0] != sides[1] or int(patch_size) != sides[0]):
        raise PlanError(f"patch size {patch_size}: the ONNX graph takes patches of exactly {sides[0]} x {sides[1]} "
                        f"px (its input's sides are fixed); use --patch-size {sides[0]} or leave it out")
    return int(patch_size)


def _model_info(model) -> tuple[Optional[str], ModelInfo]:
    """The model's path and metadata, read without Keras."""
    if isinstance(model, TilerModel) or callable(getattr(model, "load", None)):
        return model.path, model.info

    path = resolve_model_path(model) if model is not None else os.fspath(DEFAULT_MODEL_PATH)
    return path, read_info(path)


def resolve_model(model: Union[None, str, os.PathLike, TilerModel], *, info: Optional[ModelInfo] = None) -> TilerModel:
    """Return a loaded model: the default one, one from a path, ``model`` itself, or what a
    lazy model source (an object with ``path``, ``info`` and ``load()``) loads.

    Parameters
    ----------
    model : path-like, name, TilerModel or lazy model source, optional
    info : ModelInfo, optional
        The file's metadata, already read (a resolved run's): not read again.
    """
    if isinstance(model, TilerModel):
        return model
    if callable(getattr(model, "load", None)):
        return model.load()

    return load_model(resolve_model_path(model) if model is not None else None, lazy=True, info=info)


def predictor_for(tm: TilerModel, inference: InferenceConfig) -> Predictor:
    """The model's :class:`Predictor` for the run's batch size and TTA, built once per model object.

    Parameters
    ----------
    tm : TilerModel
    inference : InferenceConfig
        A resolved run's (:attr:`RunSpec.inference`): its runtime and precision were checked against the
        model by :func:`resolve_run`, and the predictor trusts them.

    Returns
    -------
    Predictor
        Kept in ``tm.predictors``: a worker that runs many scenes or parts
        with one loaded model wraps it once.
    """
    network = inference.network_options()
    key = tuple(network.items())
    if key not in tm.predictors:  # the runtime and precision were checked where the run was resolved
        tm.predictors[key] = Predictor(tm, **network, checked=True)
    return tm.predictors[key]
