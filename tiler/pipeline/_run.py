"""The run of a resolved run on a scene in this process: its guarded outputs, the scene, one stream into the sinks."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Sequence, Union

import rasterio

from tiler.blend import get_window
from tiler.config import (
    InferenceConfig,
    OutputConfig,
    StreamConfig,
    VectorConfig,
)
from tiler.destination import GEOTIFF_SUFFIXES, Destination, guard_outputs
from tiler.engine import PatchStats, ProgressCallback, stream
from tiler.errors import in_stage
from tiler.indices import ChannelPlan
from tiler.model import Predictor, TilerModel
from tiler.pipeline._prepare import grid_summary, output_context, peak_rss_mb, prepare_scene, run_grid
from tiler.pipeline._resolve import RunSpec, predictor_for, resolve_model, resolve_run
from tiler.regrid import scene_rows, to_scene_grid
from tiler.reports import RunReport, scene_summary, vector_summary
from tiler.scene import ProcessingGrid, open_scene, scene_inputs
from tiler.sinks import (
    VECTOR_FORMATS,
    ClassMapSink,
    PolygonSink,
    ProbabilitySink,
    feed,
)
from tiler.source import ChannelSource

log = logging.getLogger(__name__)


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
    return run_resolved(spec, scene, out, vector, model=model, overwrite=overwrite, progress=progress, tags=tags)


def run_resolved(spec: RunSpec, scene: Union[str, os.PathLike], out=None, vector=None, *, model=None,
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
            rasterio.Env(**streaming.gdal_env), \
            (_already(opened) if opened is not None else open_scene(scene, reference=inference.reference)) as sc:
        sinks = []
        if dests["out"] is not None:
            sinks.append(raster_sink(dests["out"], spec.output, checked=spec.creation_options))
        vector_sink = PolygonSink(dests["vector"], spec.polygons) if dests["vector"] is not None else None
        if vector_sink is not None:
            sinks.append(vector_sink)
        with in_stage("reading the scene"):
            pg = run_grid(sc, spec.info, inference, spec.output.grid)
            plan, verdict, reg_report = prepare_scene(sc, spec.info, inference, stats.seconds, grid=pg)
        with in_stage("loading the model"):
            tm = resolve_model(model if model is not None else spec.model, info=spec.info)
        predictor = predictor_for(tm, inference)
        grid = spec.grid(pg.height, pg.width)
        log.info("patch grid: patch %d px, stride %d px (overlap %d px), %d x %d patches, strips of %d rows, "
                 "column bands of %d columns", spec.patch_size, grid.stride, grid.overlap, grid.rows.count,
                 grid.cols.count, streaming.strip_rows, streaming.band_width)
        context = output_context(sc, spec.info, inference, scene, tags,
                                 grid=pg if spec.output.grid == "model" else None)
        stream_region(spec, sc, plan, predictor, sinks, context, stats=stats, progress=progress, grid=pg)
        summary = scene_summary(sc, plan, scene)

    stats.seconds["total"] = time.perf_counter() - t_start
    log.info("seconds: %s", ", ".join(f"{n} {v:.2f}" for n, v in stats.seconds.items()))
    return run_report(spec, scene=summary, registration=reg_report,
                      domain=verdict.to_dict() if verdict is not None else None,
                      out=dests["out"].location if dests["out"] is not None else None,
                      vector=vector_summary(vector_sink), model_path=tm.path,
                      runtime=predictor.runtime.name if predictor.runtime is not None else None,
                      predicted=stats.predicted, skipped_nodata=stats.skipped_nodata, seconds=stats.seconds,
                      busy=stats.seconds.get("predict", 0.0) / stats.seconds["total"], peak_rss=peak_rss_mb(),
                      processing_grid=grid_report(pg, spec.output.grid))


def run_report(spec: RunSpec, *, scene: dict, registration: Optional[dict], domain: Optional[dict],
               out: Optional[str], vector: Optional[dict], model_path: Optional[str], runtime: Optional[str],
               predicted: int, skipped_nodata: int, seconds: dict, busy: float, peak_rss: float,
               processing_grid: dict, parts: Optional[dict] = None) -> RunReport:
    """The :class:`RunReport` of a run, in one process or in parts (the one builder of both).

    Parameters
    ----------
    spec : RunSpec
    scene, registration, domain, out, vector
        The report's fields as the run found them.
    model_path, runtime : str or None
        The model file, and what executed its network.
    predicted, skipped_nodata : int
        Patches predicted, and skipped as all nodata (over every part).
    seconds : dict
        Seconds per stage (summed over the parts for a run in parts), with ``total``: the run's wall time.
    busy : float
        The share of the time in the network stage: of the run's wall time in one process, of the parts'
        task time for a run in parts.
    peak_rss : float
        MiB.
    processing_grid : dict
        :func:`grid_report`.
    parts : dict, optional
        A run in parts: totals, assembly seconds, per part its rows, seconds and worker.
    """
    grid = spec.grid(processing_grid["height"], processing_grid["width"])
    pixels = scene["width"] * scene["height"]
    return RunReport(
        scene=scene, registration=registration, domain=domain, out=out, vector=vector,
        model={"path": model_path, "channels": list(spec.info.channels), "classes": list(spec.info.classes),
               "runtime": runtime, "precision": spec.inference.precision},
        grid=grid_summary(grid, spec.streaming),
        patches={"grid": grid.count, "predicted": predicted, "skipped_nodata": skipped_nodata},
        seconds={name: round(v, 4) for name, v in seconds.items()},
        megapixels_per_second=round(pixels / 1e6 / seconds["total"], 4), peak_rss_mb=round(peak_rss, 1),
        options=spec.option_dicts(), parts=parts, network_busy=round(busy, 4), processing_grid=processing_grid)


def grid_report(pg: ProcessingGrid, output_grid: str) -> dict:
    """The run report's ``processing_grid``: :meth:`ProcessingGrid.to_dict` and ``output``, the products'
    grid (``scene``, or ``model`` where they are written on a resampled processing grid)."""
    return {**pg.to_dict(), "output": "model" if pg.resampled and output_grid == "model" else "scene"}


@contextmanager
def _already(opened):
    """An open scene as a context that leaves it open (its opener closes it)."""
    yield opened


def stream_region(spec: RunSpec, sc, plan: ChannelPlan, predictor: Predictor, sinks: Sequence, context,
                  *, stats: PatchStats, progress: Optional[ProgressCallback] = None, rows=None,
                  grid: Optional[ProcessingGrid] = None) -> tuple[int, int]:
    """Stream a region of an open scene through the network into these sinks: the one wiring of a run.

    The one-process run (:func:`run_resolved`) streams the whole scene; a part task of a distributed run
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
        The products' grid and tags, whole: restricted here to the region's output rows.
    stats : PatchStats
        Filled with the patch counts and seconds per stage.
    progress : callable, optional
        ``progress(done, total)`` in patches.
    rows : RowBand, optional
        The rows to emit (of the processing grid); default the whole scene.
    grid : ProcessingGrid, optional
        The run's processing grid (:func:`tiler.pipeline.run_grid`); default the reference grid. Where it is
        resampled, the engine runs on it and the probabilities go back onto the scene's grid before the sinks
        (:func:`tiler.regrid.to_scene_grid`) unless ``spec.output.grid`` is ``model``.

    Returns
    -------
    tuple of int
        ``(start, stop)``: the output rows written (of the products' grid).
    """
    inference, streaming = spec.inference, spec.streaming
    pg = grid if grid is not None else ProcessingGrid.of_scene(sc)
    patches = spec.grid(pg.height, pg.width)
    back = pg.resampled and spec.output.grid == "scene"
    band = patches.widened(rows, pg.rows().reach) if back and rows is not None else rows
    source = ChannelSource(sc, plan, fill=spec.info.offset, input_scale=inference.input_scale, grid=pg)
    blocks = stream(source, patches, predictor, get_window(inference.window, spec.patch_size),
                    strip_rows=streaming.strip_rows, band_width=streaming.band_width, stats=stats, progress=progress,
                    prefetch=streaming.prefetch, rows=band)
    if back:
        blocks = to_scene_grid(blocks, pg, rows=None if rows is None else rows.emit_rows, seconds=stats.seconds)
    out_rows = (0, context.height) if rows is None else output_rows(spec, pg, rows)
    feed(blocks, sinks, context if rows is None else context.rows(*out_rows), seconds=stats.seconds)
    return out_rows


def output_rows(spec: RunSpec, grid: ProcessingGrid, band) -> tuple[int, int]:
    """The rows of the products' grid a part writes: its own rows, or where its processing rows go back to
    on the scene's grid (:func:`tiler.regrid.scene_rows`).

    Parameters
    ----------
    spec : RunSpec
    grid : ProcessingGrid
    band : RowBand
        The part.

    Returns
    -------
    tuple of int
        ``(start, stop)``; the parts' rows partition the products' rows.
    """
    if grid.resampled and spec.output.grid == "scene":
        return scene_rows(grid, band.emit_rows)
    return band.emit_rows
