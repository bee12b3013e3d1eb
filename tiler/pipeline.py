"""Wiring of source, engine and sinks: :func:`run_scene`, :func:`index_scene`; and
:func:`predict`, the in-memory twin of the streaming engine."""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import rasterio

from tiler._logging import notice
from tiler._version import __version__
from tiler.blend import get_window
from tiler.config import (
    DEFAULT_BAND_WIDTH,
    DEFAULT_STRIP_ROWS,
    InferenceConfig,
    OutputConfig,
    StreamConfig,
    VectorConfig,
    run_configs,
    split_options,
)
from tiler.destination import GEOTIFF_SUFFIXES, Destination, guard_outputs
from tiler.domain import InputScale, check_domain, sample_channels
from tiler.engine import Block, PatchStats, ProgressCallback, stream
from tiler.errors import BandMismatchError, PlanError, UsageError, in_stage
from tiler.indices import ChannelPlan
from tiler.model import DEFAULT_MODEL_PATH, ModelInfo, Predictor, TilerModel, load_model, read_info
from tiler.output import check_creation_options
from tiler.plan import PatchGrid, stride_from_overlap
from tiler.reports import IndexReport, RunReport, scene_summary, vector_summary
from tiler.scene import open_scene, scene_inputs
from tiler.sinks import (
    VECTOR_FORMATS,
    ClassMapSink,
    IndexSink,
    OutputContext,
    PolygonSink,
    ProbabilitySink,
    export_classes,
    feed,
    not_georeferenced_note,
)
from tiler.source import ArraySource, ChannelSource

__all__ = ["predict", "run_scene", "index_scene", "RunSpec", "resolve_run", "run_spec", "stream_region",
           "check_patch_size",
           "resolve_model", "domain_verdict", "predictor_for", "prepare_scene", "output_context",
           "check_run_options", "RunReport", "IndexReport"]

log = logging.getLogger(__name__)


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
    from tiler.model import resolve_model_path

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


def _register(sc, plan: ChannelPlan, inference: InferenceConfig, seconds: dict) -> Optional[dict]:
    """Register the groups ``plan`` reads (``auto``), add ``seconds["register"]``, return the report entry."""
    used = sorted({sc.group_of(i) for i in plan.indexes} - {sc.reference})
    if not used:
        return None
    if inference.registration == "off":
        for n in used:
            log.info("registration off: group %s placed by its %s only", n, sc.grid(n).placed_by)
        return {"off": True, "groups": {n: {"placed_by": sc.grid(n).placed_by} for n in used}}
    from tiler.registration import register_scene

    t = time.perf_counter()
    reg = register_scene(sc, groups=used, model=inference.registration_model, grid=inference.registration_grid,
                         window=inference.registration_window)
    # A product whose bands its producer co-registered: too few usable windows (snow, cloud, water) is a
    # normal scene, not a broken one; its groups stay where their georeferencing puts them.
    fallback = bool(reg.failures) and inference.registration == "auto" and sc.kind in CO_REGISTERED
    reg.apply(sc, strict=not fallback)
    report = reg.to_dict()
    if fallback:
        reason = reg.failure_message(f"the groups stay where the {sc.kind} product's georeferencing puts them "
                                     "(its producer co-registers its bands); --registration strict refuses "
                                     "instead")
        log.warning("%s", reason)
        report["fallback"] = reason
    for g in report["groups"].values():
        g.pop("windows")
        if g["status"] != "reference":
            log.info("registration of group %s against %s: %s, %s, shift %s group px (%s m), %d windows used, "
                     "rejected %s, residual %s ref px (%s)", g["group"], g["anchor"], g["status"], g["model"],
                     g["shift_group_px"], g["shift_m"], g["windows_used"], g["windows_rejected"] or "none",
                     g["residual_rms_reference_px"], g["model_reason"] or g["reason"])
            for note in g["notes"]:
                log.info("registration of group %s: %s", g["group"], note)
    seconds["register"] = time.perf_counter() - t
    return report


#: Scene kinds (:attr:`tiler.scene.Scene.kind`) whose band groups their producer co-registers: where image-based
#: registration finds too few usable windows, ``--registration auto`` keeps their georeferenced places.
CO_REGISTERED = ("sentinel2", "landsat")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


@contextmanager
def _destinations(outputs: dict, scene: Union[str, os.PathLike], other_inputs: Sequence[str],
                  overwrite: bool) -> Iterator[dict[str, Optional[Destination]]]:
    """The checked, locked destinations of a library call: ``{label: (path or Destination or None, suffixes)}``.

    A :class:`Destination` the caller already guarded is used as it is; paths
    are guarded together (:func:`tiler.destination.guard_outputs`).
    """
    given = {k: v[0] for k, v in outputs.items() if isinstance(v[0], Destination)}
    paths = {k: v for k, v in outputs.items() if not isinstance(v[0], Destination) and v[0] is not None}
    if not paths:
        yield {k: given.get(k) for k in outputs}
        return
    with guard_outputs(paths, inputs=[*scene_inputs(scene), *other_inputs, *(d.path for d in given.values())],
                       overwrite=overwrite) as guard:
        yield {k: given.get(k) or (guard[k] if k in paths else None) for k in outputs}


def _domain_fixes(verdict) -> str:
    """What a refusal tells the user to do, with a scale computed from the scene's and the model's ranges."""
    example = ""
    for row in verdict.channels:
        scene, model = row.get("scene_range"), row.get("model_range")
        if scene and model and scene[1] > 0 and model[1] > 0 and scene[1] != model[1]:
            example = (f", e.g. --input-scale {model[1] / scene[1]:.3g} maps this scene's "
                       f"{row['scene_dtype']} 99th percentile {scene[1]:.4g} onto the model's {model[1]:.4g}")
            break
    return ("Values of another unit or bit depth: fix them with --input-scale SCALE[,OFFSET] (value * SCALE + "
            f"OFFSET{example}), a manifest's scale/offset, or a model trained on such data; --force runs anyway")


def domain_verdict(sc, plan: ChannelPlan, info: ModelInfo, input_scale: Optional[InputScale]):
    """Sample a scene's channels as the model would get them and check them against its training domain.

    Parameters
    ----------
    sc : tiler.scene.Scene
    plan : ChannelPlan
    info : ModelInfo
    input_scale : InputScale or None

    Returns
    -------
    DomainVerdict or None
        None when the model file records no training domain.
    """
    domain = info.input_domain
    if domain is None:
        return None
    samples = sample_channels(ChannelSource(sc, plan, input_scale=input_scale), sc.height, sc.width,
                              strips=sc.striped())
    # With --input-scale the values are floats that the user has mapped into the model's range on purpose.
    dtypes = plan.dtypes(sc) if input_scale is None else ("float32",) * len(domain.channels)
    return check_domain(domain, samples, dtypes, pixel_size=sc.pixel_size_m(), scaled=input_scale is not None)


def _check_domain(sc, plan: ChannelPlan, info: ModelInfo, scale: Optional[InputScale], *, force: bool):
    """:func:`domain_verdict`, logged; refuse the scene unless ``force``."""
    verdict = domain_verdict(sc, plan, info, scale)
    if verdict is None:
        log.warning("the model file records no training domain (an older file): the scene's values are not "
                    "checked against it; add one with tiler.model.update_info(path, domain=...) or retrain")
        return None
    for row in verdict.channels:
        log.info("domain %s: scene %s %s, model %s %s", row["name"], row["scene_dtype"], row["scene_range"],
                 row["model_dtype"], row["model_range"])
    for w in verdict.warnings:
        log.warning(w)
    if not verdict.ok:
        if force:
            log.warning("--force: predicting although " + "; ".join(verdict.problems))
        else:
            verdict.raise_if_refused(fixes=_domain_fixes(verdict))
    return verdict


def _log_scene(sc, plan: ChannelPlan) -> None:
    """Notices (band mapping by position, layout assumptions) and the -v details of a scene."""
    for n in sc.notes:
        notice(log, "%s", n)
    if not (sc.georeferenced or sc.gcps or sc.rpcs is not None):
        notice(log, "%s", not_georeferenced_note(sc.path))
    log.info("band mapping (%s): %s", plan.method,
             "; ".join(f"{c} <- {how}" for c, how in zip(plan.channels, plan.describe(sc))))
    for g in sc.groups:
        grid = sc.grid(g.name)
        log.info("group %s: %d x %d px, pixel %.4g, placed by %s, scale %s, offset %s", g.name, grid.width,
                 grid.height, grid.pixel_size, grid.placed_by, sorted({b.scale for b in g.bands}),
                 sorted({b.offset for b in g.bands}))


def _model_info(model) -> tuple[Optional[str], ModelInfo]:
    """The model's path and metadata, read without Keras."""
    if isinstance(model, TilerModel) or callable(getattr(model, "load", None)):
        return model.path, model.info
    from tiler.model import resolve_model_path

    path = resolve_model_path(model) if model is not None else os.fspath(DEFAULT_MODEL_PATH)
    return path, read_info(path)


def raster_sink(dest: Destination, output: OutputConfig, *, part: bool = False,
                checked: Optional[tuple] = None):
    """The GeoTIFF sink of ``output`` (class map or probabilities) writing to ``dest``.

    Parameters
    ----------
    dest : Destination
    output : OutputConfig
    part : bool, default False
        A part file of a distributed run: fast lossless intermediate
        compression, never a COG (the assembled output gets ``output``'s).
    checked : tuple of (str, str), optional
        The full creation options as checked where the run was resolved (:attr:`RunSpec.creation_options`):
        the sink takes them as they are.
    """
    co = dict(output.creation_options)
    trusted = dict(checked) if checked is not None else None
    if output.kind == "class":
        return ClassMapSink(dest, creation_options=co, cog=output.cog, part=part, checked=trusted)
    return ProbabilitySink(dest, dtype=output.probability_dtype, creation_options=co, cog=output.cog, part=part,
                           checked=trusted)


def run_scene(
    scene: Union[str, os.PathLike],
    out: Union[None, str, os.PathLike, Destination] = None,
    *,
    vector: Union[None, str, os.PathLike, Destination] = None,
    model: Union[None, str, os.PathLike, TilerModel] = None,
    inference: Optional[InferenceConfig] = None,
    streaming: Optional[StreamConfig] = None,
    output: Union[None, str, OutputConfig] = None,
    polygons: Optional[VectorConfig] = None,
    overwrite: bool = False,
    progress: Optional[ProgressCallback] = None,
    tags: Optional[dict] = None,
    **options: Any,
) -> RunReport:
    """Segment a scene, streaming it strip by strip, into a GeoTIFF and/or polygons.

    Source (the scene's channels), engine (patches, network, blender) and
    sinks (the raster, the polygons) are wired here; every product is fed
    from one pass. Only one strip of patch rows (plus its halo) of one column
    band is in memory at a time; the raster equals :func:`predict` on the
    whole scene, and the polygons equal polygonising that raster at once.

    Parameters
    ----------
    scene : path-like
        A raster rasterio can open, a scene manifest (``.toml``) or a sensor
        folder (Sentinel-2, Landsat-8/9, WorldView-3) holding the model's
        channels; see :func:`tiler.scene.open_scene`.
    out : path-like or Destination, optional
        Output GeoTIFF (``.tif``/``.tiff``), the product chosen by
        ``output``. Checked and locked before any work
        (:func:`tiler.destination.guard_outputs`; the scene's files and the
        model file count as inputs), written to a temporary file in the same
        folder and renamed into place when complete and verified. A
        :class:`~tiler.destination.Destination` the caller already guarded is
        used as it is.
    vector : path-like or Destination, optional
        Polygons of the class map (:class:`tiler.sinks.PolygonSink`), format
        by extension (:data:`tiler.sinks.VECTOR_FORMATS`). At least one of
        ``out`` and ``vector``.
    model : path-like or TilerModel, optional
        Default: the model shipped with tiler.
    inference : InferenceConfig, optional
        Patch size, overlap, batch, window, TTA, bands, input scale, force,
        reference group, registration.
    streaming : StreamConfig, optional
        Strip rows, column-band width, GDAL cache, prefetch.
    output : OutputConfig or {"class", "probability"}, optional
        Class map or probabilities (float32 / uint8), creation options, COG; a
        string is the kind (``OutputConfig(kind=output)``).
    polygons : VectorConfig, optional
        Classes, connectivity, minimum area, simplification of ``vector``.
    overwrite : bool, default False
        Replace existing outputs.
    progress : callable, optional
        ``progress(done, total)`` in patches, after each batch.
    tags : dict, optional
        Extra dataset tags of the raster (a batch run's fingerprint).
    **options
        Any field of the four configs by name (``overlap=0.25``,
        ``strip_rows=64``, ``output="probability"``, ``cog=True``,
        ``min_area=50``), applied over the configs given.

    Returns
    -------
    RunReport

    Raises
    ------
    SceneReadError, BandMismatchError, ModelFileError, PlanError, RegistrationError, UsageError
        Bad input or option (CLI exit code 2); nothing is written.
    DomainError
        The scene's values are far outside the model's training domain and
        ``force`` is false (exit code 2).
    OutputExistsError, OutputPathError, OutputBusyError
        A destination cannot be written safely (exit code 2).
    DiskFullError
        The disk filled (exit code 1); nothing is left.
    OutputVerificationError
        A finished file failed verification (exit code 4); nothing is left at ``out``.
    """
    spec = resolve_run(model=model, inference=inference, streaming=streaming, output=output, polygons=polygons,
                       raster=out is not None, vector=vector is not None, **options)
    return run_spec(spec, scene, out, vector, model=model, overwrite=overwrite, progress=progress, tags=tags)


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


def run_spec(spec: RunSpec, scene: Union[str, os.PathLike], out=None, vector=None, *, model=None,
             overwrite: bool = False, progress: Optional[ProgressCallback] = None, tags: Optional[dict] = None,
             opened=None) -> RunReport:
    """Run a resolved run on a scene in this process: guard its outputs, prepare the scene, stream it.

    Parameters
    ----------
    spec : RunSpec
    scene : path-like
    out, vector : path-like or Destination, optional
        The products of ``spec`` (a Destination the caller guarded is used as it is).
    model : TilerModel or lazy model source, optional
        The loaded model where the caller has one (a worker's); else ``spec.model`` is loaded on first use.
    overwrite : bool
    progress : callable, optional
    tags : dict, optional
        Extra dataset tags of the raster.
    opened : tiler.scene.Scene, optional
        The scene already open (a task that opened it to count its strips), on ``spec``'s reference group.

    Returns
    -------
    RunReport

    Raises
    ------
    TilerError
        As :func:`run_scene`.
    """
    t_start = time.perf_counter()
    stats = PatchStats()
    inference, streaming = spec.inference, spec.streaming
    with _destinations({"out": (out, GEOTIFF_SUFFIXES), "vector": (vector, tuple(VECTOR_FORMATS))}, scene,
                       [spec.model] if spec.model else [], overwrite) as dests, \
            rasterio.Env(GDAL_CACHEMAX=streaming.gdal_cache_mb), \
            (_already(opened) if opened is not None else open_scene(scene, reference=inference.reference)) as sc:
        sinks = []
        if dests["out"] is not None:
            sinks.append(raster_sink(dests["out"], spec.output, checked=spec.creation_options))
        vector_sink = PolygonSink(dests["vector"], spec.polygons) if dests["vector"] is not None else None
        if vector_sink is not None:
            sinks.append(vector_sink)
        with in_stage("reading the scene"):
            plan, verdict, reg_report = prepare_scene(sc, spec.info, inference, stats.seconds)
        with in_stage("loading the model"):
            tm = resolve_model(model if model is not None else spec.model, info=spec.info)
        predictor = predictor_for(tm, inference)
        grid = spec.grid(sc.height, sc.width)
        log.info("patch grid: patch %d px, stride %d px (overlap %d px), %d x %d patches, strips of %d rows, "
                 "column bands of %d columns", spec.patch_size, grid.stride, grid.overlap, grid.rows.count,
                 grid.cols.count, streaming.strip_rows, streaming.band_width)
        stream_region(spec, sc, plan, predictor, sinks, output_context(sc, spec.info, inference, scene, tags),
                      stats=stats, progress=progress)
        summary = scene_summary(sc, plan, scene)

    stats.seconds["total"] = time.perf_counter() - t_start
    log.info("seconds: %s", ", ".join(f"{n} {v:.2f}" for n, v in stats.seconds.items()))
    return RunReport(
        scene=summary, registration=reg_report, domain=verdict.to_dict() if verdict is not None else None,
        out=dests["out"].path if dests["out"] is not None else None, vector=vector_summary(vector_sink),
        model={"path": tm.path, "channels": list(spec.info.channels), "classes": list(spec.info.classes),
               "runtime": predictor.runtime.name if predictor.runtime is not None else None,
               "precision": inference.precision},
        grid=grid_summary(grid, streaming),
        patches={"grid": grid.count, "predicted": stats.predicted, "skipped_nodata": stats.skipped_nodata},
        seconds={name: round(v, 4) for name, v in stats.seconds.items()},
        megapixels_per_second=round(summary["width"] * summary["height"] / 1e6 / stats.seconds["total"], 4),
        peak_rss_mb=round(peak_rss_mb(), 1),
        options=spec.option_dicts(),
        network_busy=round(stats.seconds.get("predict", 0.0) / stats.seconds["total"], 4),
    )


@contextmanager
def _already(opened):
    """An open scene as a context that leaves it open (its opener closes it)."""
    yield opened


def stream_region(spec: RunSpec, sc, plan: ChannelPlan, predictor: Predictor, sinks: Sequence, context,
                  *, stats: PatchStats, progress: Optional[ProgressCallback] = None, rows=None) -> None:
    """Stream a region of an open scene through the network into these sinks: the one wiring of a run.

    The one-process run (:func:`run_spec`) streams the whole scene; a part task of a distributed run
    (:func:`tiler.distributed._tasks.run_part`) streams its row band into part files.

    Parameters
    ----------
    spec : RunSpec
    sc : tiler.scene.Scene
        Open, its band groups' corrections set.
    plan : ChannelPlan
        The model's channels on the scene.
    predictor : Predictor
    sinks : sequence of Sink
    context : OutputContext
        The products' grid and tags (restricted to the region's rows by the caller).
    stats : PatchStats
        Filled with the patch counts and seconds per stage.
    progress : callable, optional
        ``progress(done, total)`` in patches.
    rows : RowBand, optional
        The rows to emit; default the whole scene.
    """
    inference, streaming = spec.inference, spec.streaming
    source = ChannelSource(sc, plan, fill=spec.info.offset, input_scale=inference.input_scale)
    blocks = stream(source, spec.grid(sc.height, sc.width), predictor, get_window(inference.window, spec.patch_size),
                    strip_rows=streaming.strip_rows, band_width=streaming.band_width, stats=stats, progress=progress,
                    prefetch=streaming.prefetch, rows=rows)
    feed(blocks, sinks, context, seconds=stats.seconds)


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
    from tiler.model import check_runtime

    check_runtime(inference.runtime, inference.precision, onnx=info.is_onnx)
    co = None
    if raster:
        co = check_creation_options(dict(output.creation_options), dtype=output.dtype,
                                    count=1 if output.kind == "class" else len(info.classes))
    if vector:
        export_classes(info.classes, polygons.classes)  # an unknown --classes name fails before any work
    return p, stride, co


def prepare_scene(sc, info: ModelInfo, inference: InferenceConfig, seconds: dict):
    """Map the model's channels onto an open scene, check its domain, register its band groups.

    Parameters
    ----------
    sc : tiler.scene.Scene
        Corrections of the registered groups are set on it.
    info : ModelInfo
    inference : InferenceConfig
    seconds : dict
        ``seconds["register"]`` gets the registration time.

    Returns
    -------
    tuple
        ``(plan, verdict, registration report)``: the :class:`ChannelPlan`,
        the domain verdict (or None) and the JSON-ready registration summary
        (or None where no other group is read).

    Raises
    ------
    BandMismatchError, DomainError, RegistrationError
        The scene lacks a channel, is outside the model's domain (without
        ``force``), or a group cannot be registered.
    """
    plan = ChannelPlan.for_scene(sc, info.channels, bands=inference.bands)
    _log_scene(sc, plan)
    verdict = _check_domain(sc, plan, info, inference.input_scale, force=inference.force)
    reg_report = _register(sc, plan, inference, seconds)
    return plan, verdict, reg_report


def output_context(sc, info: ModelInfo, inference: InferenceConfig, scene: Union[str, os.PathLike],
                   tags: Optional[dict] = None) -> OutputContext:
    """The :class:`OutputContext` of a run's products: the reference grid, classes, dataset tags.

    Parameters
    ----------
    sc : tiler.scene.Scene
    info : ModelInfo
    inference : InferenceConfig
    scene : path-like
        The scene as given (its stem identifies it in a WKT CSV).
    tags : dict, optional
        Extra dataset tags (a distributed run's fingerprint).
    """
    return OutputContext(
        sc.width, sc.height, sc.crs if sc.georeferenced else None, sc.transform if sc.georeferenced else None,
        tuple(info.classes), labels=info.labels,
        tags={"TILER_VERSION": __version__, "TILER_CLASSES": ",".join(info.classes), "TILER_TTA": inference.tta,
              **(tags or {})},
        source=os.path.splitext(os.path.basename(os.fspath(scene).rstrip(os.sep)))[0], gcps=sc.gcps, rpcs=sc.rpcs)


def grid_summary(grid: PatchGrid, streaming: StreamConfig) -> dict:
    """The patch grid of a run, JSON-ready (the report's ``grid``)."""
    return {"patch_size": grid.patch_size, "stride": grid.stride, "overlap_px": grid.overlap,
            "patch_rows": grid.rows.count, "patch_cols": grid.cols.count,
            "strips": len(list(grid.strips(streaming.strip_rows))),
            "column_bands": len(list(grid.column_bands(streaming.band_width)))}


def _check_reflectance(sc, plan) -> None:
    """Refuse indices with additive constants on raw digital numbers; note the scale-invariant ones.

    Raises
    ------
    UsageError
        If an index that needs reflectance (:attr:`SpectralIndex.needs_reflectance`)
        reads unscaled integer bands.
    """
    from tiler.indices import INDICES

    raw = plan.unscaled_inputs(sc)
    refused = {n: b for n, b in raw.items() if INDICES[n].needs_reflectance}
    if refused:
        bands = sorted({i for b in refused.values() for i in b})
        names = " and ".join(n.upper() for n in refused)
        raise UsageError(
            f"{names} {'need' if len(refused) > 1 else 'needs'} surface reflectance in [0, 1] (the additive "
            "constants of "
            f"{', '.join(INDICES[n].formula for n in refused)} are calibrated for it), but band(s) "
            f"{', '.join(f'{i} ({sc.band_names[i - 1]}, {sc.value_dtype(i)})' for i in bands)} of {sc.path!r} are "
            "unscaled digital numbers; give their group a radiometric `scale`/`offset` in a scene manifest "
            "(e.g. scale = 0.0001 for Sentinel-2 L2A), or open the product's folder so that tiler reads its "
            "scaling from the metadata")
    if raw:
        notice(log, "%s computed on unscaled digital numbers: a normalised difference does not depend on a "
               "common scale of its bands, but differs from the reflectance index where the bands have offsets",
               ", ".join(raw))


def index_scene(
    scene: Union[str, os.PathLike],
    out: Union[str, os.PathLike, Destination],
    indices: Sequence[str],
    *,
    params: Optional[dict[str, dict[str, float]]] = None,
    inference: Optional[InferenceConfig] = None,
    streaming: Optional[StreamConfig] = None,
    output: Optional[OutputConfig] = None,
    overwrite: bool = False,
    progress: Optional[ProgressCallback] = None,
    **options: Any,
) -> IndexReport:
    """Compute spectral indices of a scene into a float32 GeoTIFF, strip by strip.

    Parameters
    ----------
    scene : path-like
        A raster, scene manifest or sensor folder (:func:`tiler.scene.open_scene`)
        whose bands carry the indices' input band names.
    out : path-like or Destination
        Output GeoTIFF (``.tif``/``.tiff``): one float32 band per index, band
        descriptions set to the index names, nodata NaN; guarded, written to a
        temporary file and renamed into place when complete and verified (as
        for :func:`run_scene`).
    indices : sequence of str
        Index names (:data:`tiler.indices.INDICES`), in band order.
    params : dict, optional
        Per index, parameter overrides, e.g. ``{"savi": {"L": 1.0}}``.
    inference : InferenceConfig, optional
        Its ``reference`` and ``registration*`` fields apply.
    streaming : StreamConfig, optional
        ``strip_rows`` (reference-grid rows per strip) and ``gdal_cache_mb`` apply.
    output : OutputConfig, optional
        ``creation_options`` and ``cog`` apply.
    overwrite : bool, default False
    progress : callable, optional
        ``progress(done, total)`` in rows.
    **options
        Fields of the configs by name (``strip_rows=64``, ``cog=True``).

    Returns
    -------
    IndexReport

    Raises
    ------
    UsageError
        Unknown index or parameter (exit code 2).
    SceneReadError, BandMismatchError, RegistrationError, OutputExistsError, OutputPathError, OutputBusyError
        Bad input or destination (exit code 2); nothing is written.
    DiskFullError
        The disk filled (exit code 1); nothing is left.
    """
    from tiler.indices import INDICES

    t_start = time.perf_counter()
    seconds = {"register": 0.0, "read": 0.0, "compute": 0.0, "write": 0.0}
    inference, streaming, output = split_options(options, inference or InferenceConfig(),
                                                 streaming or StreamConfig(), output or OutputConfig())
    names = [n.lower() for n in indices]
    params = {k.lower(): dict(v) for k, v in (params or {}).items()}
    unknown = [n for n in names + list(params) if n not in INDICES]
    if not names or unknown:
        raise UsageError(f"unknown or missing index name(s) {unknown or '(none given)'}; known: {', '.join(INDICES)}")
    for n, p in params.items():
        bad = set(p) - set(INDICES[n].params)
        if bad:
            raise UsageError(f"{n} has no parameter(s) {', '.join(sorted(bad))}; "
                             f"its parameters: {', '.join(INDICES[n].params) or 'none'}")
    co = check_creation_options(dict(output.creation_options), dtype="float32", count=len(names))
    strip_rows = streaming.strip_rows
    with _destinations({"out": (out, GEOTIFF_SUFFIXES)}, scene, [], overwrite) as dests, \
            rasterio.Env(GDAL_CACHEMAX=streaming.gdal_cache_mb), \
            open_scene(scene, reference=inference.reference) as sc:
        sink = IndexSink(dests["out"], creation_options=co, cog=output.cog)
        plan = ChannelPlan.for_scene(sc, names)
        _check_reflectance(sc, plan)
        _log_scene(sc, plan)
        reg_report = _register(sc, plan, inference, seconds)
        radiometry = {}
        for i in plan.indexes:
            b = sc.band(i)
            radiometry[b.name] = {"group": sc.group_of(i), "scale": b.scale, "offset": b.offset,
                                  "saturation_dn": b.saturation}
        described = {n: {"formula": INDICES[n].formula, "params": {**INDICES[n].params, **params.get(n, {})},
                         "bounds": INDICES[n].bounds, "reference": INDICES[n].reference} for n in names}
        context = OutputContext(
            sc.width, sc.height, sc.crs if sc.georeferenced else None, sc.transform if sc.georeferenced else None,
            tuple(names),
            tags={"TILER_VERSION": __version__, "TILER_INDICES": ",".join(names),
                  "TILER_RADIOMETRY": json.dumps({"bands": radiometry, "notes": list(sc.notes)}),
                  "TILER_INDEX_DEFINITIONS": json.dumps(described)}, gcps=sc.gcps, rpcs=sc.rpcs)

        def blocks() -> Iterator[Block]:
            for r0 in range(0, sc.height, strip_rows):
                r1 = min(sc.height, r0 + strip_rows)
                t = time.perf_counter()
                data, valid = sc.read((r0, r1), (0, sc.width), plan.indexes)
                t2 = time.perf_counter()
                result = plan.build(data, valid, **params)
                seconds["read"] += t2 - t
                seconds["compute"] += time.perf_counter() - t2
                yield Block((r0, r1), (0, sc.width), valid, values=result)
                if progress is not None:
                    progress(r1, sc.height)

        feed(blocks(), [sink], context, seconds=seconds)
        seconds["total"] = time.perf_counter() - t_start
        return IndexReport(scene=sc.describe(), out=dests["out"].path, indices=described, radiometry=radiometry,
                           registration=reg_report, seconds={k: round(v, 4) for k, v in seconds.items()},
                           options={"inference": {k: inference.to_dict()[k] for k in
                                                  ("reference", "registration", "registration_model",
                                                                     "registration_grid", "registration_window")},
                                    "streaming": streaming.to_dict(), "output": output.to_dict()})
