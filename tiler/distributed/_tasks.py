"""The tasks of a distributed run, executed on dask workers (or in this process).

- :func:`start` opens a scene and either runs it whole into its final names
  (one part) or prepares it for parts: checks its domain, registers its band
  groups once, and returns the row bands and corrections every part uses.
- :func:`run_part` streams one row band into part files in the work folder.
- :func:`assemble` copies the part files' decoded blocks into the final
  products through the same sinks and verifies them.

A task never renames a product into place: it stages it (complete, verified,
under a temporary name beside the destination) and returns its path; the
process that started the run takes it over and commits it with the run's other
outputs, then removes the work folder.

A worker keeps each model it loaded (by the model file's sha256) for every
later task, and caps GDAL's block cache by the run's ``gdal_cache_mb``.
Errors of the input (a corrupt scene, a missing band) come back as a result
with ``error`` set, so that dask does not retry them; other exceptions (I/O)
propagate and are retried.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Union

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from tiler.config import InferenceConfig, OutputConfig, StreamConfig, VectorConfig
from tiler.destination import Destination
from tiler.distributed._journal import FINGERPRINT_TAG, work_folder
from tiler.engine import Block, PatchStats
from tiler.errors import TilerError
from tiler.indices import ChannelPlan
from tiler.model import load_model
from tiler.output import CLASS_NODATA
from tiler.pipeline import (
    RunSpec,
    grid_report,
    output_context,
    output_rows,
    peak_rss_mb,
    predictor_for,
    prepare_scene,
    raster_sink,
    run_grid,
    run_resolved,
    stream_region,
)
from tiler.plan import RowBand
from tiler.reports import scene_summary, vector_summary
from tiler.scene import open_scene
from tiler.sinks import PartPolygonSink, PolygonSink, feed, load_pieces

__all__ = ["SceneJob", "start", "run_part", "assemble", "resolve_parts", "PART_STRIPS", "WHOLE_MAX_STRIPS"]

#: A scene of at most this many strips runs as one part unless more are asked
#: for: a crash costs little, and a part file and assembly would cost more.
WHOLE_MAX_STRIPS = 16
#: Strips per part of a larger scene (``--parts auto``): with 512-row strips a
#: part is 4096 rows, small enough that a crash loses little and that a large
#: scene spreads over several workers.
PART_STRIPS = 8
#: Models kept per worker process (least recently used dropped).
_MAX_MODELS = 2
_MODELS: "OrderedDict[str, Any]" = OrderedDict()


@dataclass(frozen=True)
class SceneJob:
    """One scene of a distributed run: what every task needs, picklable.

    Attributes
    ----------
    scene : str
        Scene path (raster, manifest, sensor folder, STAC Item).
    out : str or None
        Final raster path.
    vector : str or None
        Final polygons path.
    model : str
        Model file path (workers must see it).
    model_sha256 : str
        Its hash: the key of the worker's model cache.
    spec : RunSpec
        The run resolved once where it started (:func:`tiler.pipeline.resolve_run`): the model's metadata
        and the configs checked against it; tasks use it as it is.
    overwrite : bool
    parts : int or "auto"
    fingerprint : str
        Digest of the run's fingerprint (:func:`tiler.distributed.digest`),
        written to the raster's ``TILER_FINGERPRINT`` tag.
    out_url : str or None
        Where the raster is uploaded when a batch bound for object storage
        commits it (``out`` is then its file in the local work folder).
    """

    scene: str
    out: Optional[str]
    vector: Optional[str]
    model: str
    model_sha256: str
    spec: RunSpec
    overwrite: bool
    parts: Union[int, str] = "auto"
    fingerprint: str = ""
    out_url: Optional[str] = None

    def configs(self) -> tuple[InferenceConfig, StreamConfig, OutputConfig, VectorConfig]:
        """The frozen configs of the run (the spec's)."""
        s = self.spec
        return s.inference, s.streaming, s.output, s.polygons

    @property
    def options(self) -> dict:
        """The configs as JSON-ready dicts (the journal's record of the run)."""
        return self.spec.option_dicts()

    @property
    def work(self) -> str:
        """The work folder (beside the raster, else beside the polygons)."""

        return work_folder(self.out or self.vector)


def resolve_parts(parts: Union[int, str], strips: int) -> int:
    """Number of parts of a scene of ``strips`` strips.

    ``"auto"``: one part up to :data:`WHOLE_MAX_STRIPS` strips, else parts of
    :data:`PART_STRIPS` strips (a number that depends on the scene and the
    options only, never on the workers, so a resumed run finds its parts).
    """
    if parts == "auto":
        return 1 if strips <= WHOLE_MAX_STRIPS else -(-strips // PART_STRIPS)
    return max(1, min(int(parts), strips))


def _cached_model(job: SceneJob):
    """The job's model, loaded once per worker process."""

    tm = _MODELS.pop(job.model_sha256, None)
    if tm is None:
        tm = load_model(job.model, lazy=True, info=job.spec.info)
        while len(_MODELS) >= _MAX_MODELS:
            _MODELS.popitem(last=False)
    _MODELS[job.model_sha256] = tm
    return tm


class _WorkerModel:
    """A job's model as :func:`tiler.run_scene` takes it: its metadata now (no Keras), the network on first use.

    The scene and its channels are checked before anything of Keras is imported, so that a bad
    scene is refused in the time ``tiler info`` takes; the network comes from the worker's cache
    (:func:`_cached_model`).
    """

    def __init__(self, job: SceneJob, info) -> None:
        self.job, self.path, self.info = job, job.model, info

    def load(self):
        """The loaded :class:`tiler.model.TilerModel` (once per worker process)."""
        return _cached_model(self.job)


def _worker_name() -> str:
    """The dask worker's address, or ``host:pid`` in a process that is no worker (a one-process run does not
    import dask.distributed for it: 0.2 s)."""
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return get_worker().address
        except ValueError:
            pass
    return f"{socket.gethostname()}:{os.getpid()}"


def _error(exc: TilerError) -> dict:
    return {"error": f"{exc}", "error_type": type(exc).__name__, "worker": _worker_name()}


def start(job: SceneJob, progress=None) -> dict:
    """Open the scene; run it whole (one part) or prepare its parts.

    Parameters
    ----------
    job : SceneJob
    progress : callable, optional
        ``progress(done, total)`` in patches (in-process runs only).

    Returns
    -------
    dict
        ``{"status": "done", "report": RunReport dict, ...}`` for a scene run
        whole; ``{"status": "parts", "bands", "patch_size", "corrections",
        "context", "summary", "registration", "domain"}`` for a scene in
        parts; ``{"error", "error_type"}`` for a bad scene or option.
    """

    spec = job.spec
    inference, streaming = spec.inference, spec.streaming
    t = time.perf_counter()
    try:
        with rasterio.Env(**streaming.gdal_env), \
                open_scene(job.scene, reference=inference.reference) as sc:
            pg = run_grid(sc, spec.info, inference, spec.output.grid)
            grid = spec.grid(pg.height, pg.width)
            n = resolve_parts(job.parts, len(list(grid.strips(streaming.strip_rows))))
            if n > 1:
                plan, verdict, reg = prepare_scene(sc, spec.info, inference, {}, grid=pg)
                return {"status": "parts", "bands": grid.row_bands(streaming.strip_rows, n),
                        "patch_size": spec.patch_size,
                        "corrections": {k: tuple(v)[:6] for k, v in sc.corrections.items()},
                        "grid": pg, "processing_grid": grid_report(pg, spec.output.grid),
                        "context": output_context(sc, spec.info, inference, job.scene,
                                                  {FINGERPRINT_TAG: job.fingerprint},
                                                  grid=pg if spec.output.grid == "model" else None),
                        "summary": scene_summary(sc, plan, job.scene), "registration": reg,
                        "domain": verdict.to_dict() if verdict is not None else None,
                        "task_seconds": time.perf_counter() - t, "worker": _worker_name()}
            dests = _staging(job)
            try:
                report = run_resolved(spec, job.scene, dests["out"], dests["vector"],
                                      model=_WorkerModel(job, spec.info), overwrite=job.overwrite,
                                      progress=progress, tags={FINGERPRINT_TAG: job.fingerprint}, opened=sc)
            except BaseException:
                _discard(dests)
                raise
    except TilerError as exc:
        return _error(exc)
    return {"status": "done", "report": report.to_dict(), "staged": _staged(dests), "worker": _worker_name(),
            "peak_rss_mb": peak_rss_mb(), "task_seconds": time.perf_counter() - t}


def _staging(job: SceneJob) -> dict[str, Optional[Destination]]:
    """The job's products as deferred destinations: a task stages them (complete and verified, under
    temporary names) and the process that started the run renames them into place with its other outputs."""
    return {k: Destination(p, overwrite=job.overwrite, deferred=True) if p else None
            for k, p in (("out", job.out), ("vector", job.vector))}


def _staged(dests: dict) -> dict[str, Optional[str]]:
    return {k: d.staged if d is not None else None for k, d in dests.items()}


def _discard(dests: dict) -> None:
    for d in dests.values():
        if d is not None:
            d.discard()


def part_files(job: SceneJob, index: int) -> dict[str, str]:
    """File names (in the work folder) of a part: ``raster`` (the part's rows of ``--out``); with polygons,
    ``features`` (a GeoPackage of the part's finished polygons) and ``pieces`` (the regions its seams cut,
    :func:`tiler.sinks.save_pieces`). No probabilities are kept for the polygons: a part computes each region's
    pixel count and probability sum while its probabilities are in memory."""
    files = {}
    if job.out is not None:
        files["raster"] = f"part-{index:05d}.tif"
    if job.vector is not None:
        files["features"] = f"part-{index:05d}.features.gpkg"
        files["pieces"] = f"part-{index:05d}.pieces.npz"
    return files


def run_part(job: SceneJob, prepared: dict, band: RowBand, progress=None) -> dict:
    """Stream one row band of the scene into its part files.

    Parameters
    ----------
    job : SceneJob
    prepared : dict
        :func:`start`'s result for the scene.
    band : RowBand
    progress : callable, optional
        ``progress(done, total)`` in patches (in-process runs only).

    Returns
    -------
    dict
        ``part``, ``rows``, ``sizes`` (file name -> bytes), ``seconds``,
        ``patches``, ``worker``, ``peak_rss_mb``; or ``error``.
    """

    spec = job.spec
    inference, streaming = spec.inference, spec.streaming
    t = time.perf_counter()
    files = part_files(job, band.index)
    stats = PatchStats()
    try:
        tm = _cached_model(job)
        with rasterio.Env(**streaming.gdal_env), \
                open_scene(job.scene, reference=inference.reference) as sc:
            for name, c in prepared["corrections"].items():
                sc.set_correction(name, Affine(*c))
            plan = ChannelPlan.for_scene(sc, spec.info.channels, bands=inference.bands)
            rows = output_rows(spec, prepared["grid"], band)
            sinks, polygons = [], None
            if "raster" in files:
                sinks.append(raster_sink(_part_destination(job, files["raster"]), spec.output, part=True))
            if "features" in files:
                polygons = PartPolygonSink(_part_destination(job, files["features"]), spec.polygons,
                                           prepared["context"], rows, os.path.join(job.work, files["pieces"]))
                sinks.append(polygons)
            predictor = predictor_for(tm, inference)
            stream_region(spec, sc, plan, predictor, sinks, prepared["context"],
                          stats=stats, progress=progress, rows=band, grid=prepared["grid"])
    except TilerError as exc:
        return _error(exc)
    return {"part": band.index, "rows": list(rows),
            "polygons": polygons.summary() if polygons is not None else None,
            "sizes": {n: os.path.getsize(os.path.join(job.work, n)) for n in files.values()},
            "seconds": round(time.perf_counter() - t, 4), "task_seconds": time.perf_counter() - t,
            "stages": {k: round(v, 4) for k, v in stats.seconds.items()},
            "patches": stats.predicted, "skipped_nodata": stats.skipped_nodata, "worker": _worker_name(),
            "runtime": predictor.runtime.name if predictor.runtime is not None else None,
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def _part_destination(job: SceneJob, name: str) -> Destination:
    return Destination(os.path.join(job.work, name), overwrite=True, intermediate=True)


def _open_part(path: str):
    """Open a part file; it carries no GCPs or RPCs (the assembled product does), which is no news."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _read_blocks(job: SceneJob, parts: list[dict], width: int, band_width: int) -> Iterator[Block]:
    """The part rasters' contents as blocks, in the engine's order (column band, then rows)."""
    _, _, output, _ = job.configs()
    files = [part_files(job, int(p["part"])) for p in parts]
    for c0 in range(0, width, band_width):
        c1 = min(width, c0 + band_width)
        for entry, names in zip(parts, files):
            r0 = int(entry["rows"][0])
            with _open_part(os.path.join(job.work, names["raster"])) as raster:
                step = raster.block_shapes[0][0]
                for a in range(0, raster.height, step):
                    window = Window(c0, a, c1 - c0, min(step, raster.height - a))
                    values = class_map = None
                    if output.kind == "class":
                        class_map = raster.read(1, window=window)
                        valid = class_map != CLASS_NODATA
                    else:
                        stored = raster.read(window=window)
                        if output.probability_dtype == "uint8":
                            values = stored.astype(np.float32) / np.float32(255)
                            valid = raster.read_masks(1, window=window) > 0
                        else:
                            values = stored
                            valid = ~np.isnan(stored[0])
                    yield Block((r0 + a, r0 + a + window.height), (c0, c1), valid, values=values,
                                class_map=class_map)


def _assemble_polygons(job: SceneJob, parts: list[dict], dest: Destination, config, context) -> PolygonSink:
    """The polygons of a scene in parts: every part's finished features copied, the regions its seams cut
    joined from their pieces; committed (staged) here."""
    sink = PolygonSink(dest, config)
    sink.open(context)
    try:
        for entry in parts:
            names = part_files(job, int(entry["part"]))
            sink.absorb(os.path.join(job.work, names["features"]),
                        load_pieces(os.path.join(job.work, names["pieces"])), entry["polygons"])
        sink.finish_pieces()
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return sink


def assemble(job: SceneJob, prepared: dict, parts: list[dict]) -> dict:
    """Copy the parts into the final products and verify them (staged: the caller commits them).

    Parameters
    ----------
    job : SceneJob
    prepared : dict
        :func:`start`'s result.
    parts : list of dict
        :func:`run_part`'s results (or their journal entries), in row order.

    Returns
    -------
    dict
        ``seconds``, ``split`` (of them, ``{"vector": s, "raster": s}``: joining the polygons, copying the
        raster), ``vector`` (the polygons' summary), ``staged`` (product -> staged file), ``worker``; or
        ``error``.
    """

    t = time.perf_counter()
    _, streaming, output, polygons = job.configs()
    context = prepared["context"]
    vector_sink = None
    dests = _staging(job)
    split = {"vector": 0.0, "raster": 0.0}
    try:
        with rasterio.Env(**streaming.gdal_env):
            if dests["vector"] is not None:
                vector_sink = _assemble_polygons(job, parts, dests["vector"], polygons, context)
                split["vector"] = time.perf_counter() - t
            if dests["out"] is not None:
                t_raster = time.perf_counter()
                feed(_read_blocks(job, parts, context.width, streaming.band_width),
                     [raster_sink(dests["out"], output)], context)
                split["raster"] = time.perf_counter() - t_raster
    except TilerError as exc:
        _discard(dests)
        return _error(exc)
    except BaseException:
        _discard(dests)
        raise
    return {"seconds": round(time.perf_counter() - t, 4), "task_seconds": time.perf_counter() - t,
            "split": {k: round(v, 4) for k, v in split.items()},
            "vector": vector_summary(vector_sink), "staged": _staged(dests), "worker": _worker_name()}
