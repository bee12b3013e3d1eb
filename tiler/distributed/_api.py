"""``run`` (one scene, in parts over workers, resumable) and ``batch`` (archives of scenes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from tiler import errors
from tiler._logging import notice
from tiler._version import __version__
from tiler.config import WORKER_TIMEOUT, InferenceConfig, OutputConfig, StreamConfig, VectorConfig
from tiler.destination import GEOTIFF_SUFFIXES, Destination, guard_outputs
from tiler.distributed._inputs import expand_inputs, output_name
from tiler.distributed._journal import FINGERPRINT_TAG, digest, fingerprint
from tiler.distributed._runner import BatchAborted, ClusterError, SceneResult, SchedulerLost, execute
from tiler.distributed._tasks import SceneJob, resolve_parts
from tiler.errors import OutputExistsError, OutputPathError, TilerError, UsageError
from tiler.pipeline import resolve_run, run_report, run_resolved
from tiler.reports import RunReport
from tiler.scene import open_scene, scene_inputs
from tiler.sinks import VECTOR_FORMATS
from tiler.storage import (
    WRITE_SCHEMES,
    check_bucket,
    configure_gdal,
    default_work_dir,
    exists,
    is_url,
    join,
    redact,
    scheme_of,
    work_path,
)

__all__ = ["run", "batch", "cluster", "BatchReport", "make_job", "WORKER_TIMEOUT"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


@contextmanager
def cluster(workers: Optional[int] = None, scheduler: Optional[str] = None, *,
            gdal_cache_mb: Optional[int] = None, worker_timeout: float = WORKER_TIMEOUT) -> Iterator[Any]:
    """A dask.distributed client for a run: a local cluster, an existing scheduler, or none.

    Parameters
    ----------
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes, one thread
        each (each worker's numeric libraries get ``cores // workers``
        threads, unless ``TF_NUM_INTRAOP_THREADS``, ``OMP_NUM_THREADS`` ...
        are set in the environment; its OpenVINO network takes every core unless
        :data:`tiler.model.THREADS_ENV` caps it: two workers on two cores capped at one
        thread each took 88.9 s over the 8192² mosaic in 3 parts, uncapped 72.2 s, a part
        left alone running on one core, benchmarks/gigapixel.py). Where ``dask_cuda`` is
        installed and there are at least this many GPUs, a ``LocalCUDACluster`` (one worker
        per GPU) instead.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``); its workers must
        see the scenes, the model file and the output folder at the same paths.
    gdal_cache_mb : int, optional
        GDAL block cache of each local worker, MB.
    worker_timeout : float, default :data:`WORKER_TIMEOUT`
        With ``scheduler``: seconds to wait for a first worker where the scheduler has none (said at once,
        with what to start), before giving up.

    Yields
    ------
    distributed.Client or None
        None when neither is given (tasks run in this process).

    Raises
    ------
    UsageError
        Both given, a worker count below 1, or a scheduler that cannot be reached.
    ClusterError
        The scheduler had no worker and none joined within ``worker_timeout`` (exit code 1).
    """
    if workers is not None and scheduler is not None:
        raise UsageError("give --workers N (a local cluster) or --scheduler ADDRESS (an existing one), not both")
    if workers is None and scheduler is None:
        yield None
        return
    from distributed import Client

    if scheduler is not None:
        _check_address(scheduler)
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"--scheduler: cannot reach the dask scheduler at {scheduler!r} ({exc}); start it "
                             "with `dask scheduler` and give its address, e.g. tcp://host:8786") from None
        except (ValueError, TypeError) as exc:
            raise UsageError(f"--scheduler: {scheduler!r} is not a dask scheduler address ({exc}); give one like "
                             "tcp://host:8786") from None
        with client:
            _await_workers(client, scheduler, worker_timeout)
            yield client
        return
    if not isinstance(workers, int) or workers < 1:
        raise UsageError(f"--workers must be a positive number of worker processes, got {workers!r}")
    workers, memory_limit = _worker_budget(workers)
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {k: os.environ.get(k, v) for k, v in (  # a value the user set wins
        ("OMP_NUM_THREADS", threads), ("TF_NUM_INTRAOP_THREADS", threads), ("TF_NUM_INTEROP_THREADS", "1"),
        ("NUMBA_NUM_THREADS", threads), ("MKL_NUM_THREADS", threads), ("OPENBLAS_NUM_THREADS", threads))}
    if gdal_cache_mb is not None:
        env["GDAL_CACHEMAX"] = str(gdal_cache_mb)  # the configuration option: a number below 100000 is MB
    local = _cuda_cluster(workers, env)
    if local is None:
        from distributed import LocalCluster

        local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                             silence_logs=logging.ERROR, env=env, memory_limit=memory_limit)
    with local, Client(local) as client:
        client._tiler_memory_limit = memory_limit
        log.info("dask LocalCluster of %d worker(s), %s thread(s) each, memory limit %d MB each; dashboard %s",
                 workers, env["TF_NUM_INTRAOP_THREADS"], memory_limit // 2**20, client.dashboard_link)
        yield client


def _check_address(scheduler: str) -> None:
    """Refuse a scheduler address that cannot be one (``not a url``, a TCP address without its port) before
    any connection: a client started on it fails inside dask's event loop, where a previous client's
    shutdown can turn the ValueError into another error (seen once under load: an AssertionError, exit 1).

    Raises
    ------
    UsageError
        Naming the address and the form it should take.
    """
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(scheduler)
        if scheme in ("tcp", "tls"):
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--scheduler: {scheduler!r} is not a dask scheduler address ({exc}); give one like "
                         "tcp://host:8786") from None


def _await_workers(client, scheduler: str, timeout: float) -> None:
    """Say how many workers the scheduler has; with none, say that tiler waits for them, and give up after
    ``timeout`` seconds naming what to start (never a silent wait)."""
    n = len(client.nthreads())
    notice(log, "dask scheduler %s: %d worker(s)", scheduler, n)
    log.info("dashboard %s", client.dashboard_link)
    if n:
        return
    notice(log, "waiting for workers to join the dask scheduler at %s (up to %.0f s, --worker-timeout): start "
           "them with `dask worker %s`", scheduler, timeout, scheduler)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise ClusterError(f"no dask worker joined the scheduler at {scheduler} in {timeout:.0f} s; start workers "
                           f"with `dask worker {scheduler}` (on machines that see the scenes, the model and the "
                           "outputs at the same paths), then run the same command again") from None
    notice(log, "dask scheduler %s: %d worker(s) joined", scheduler, len(client.nthreads()))


#: Memory a local worker is given at least: a one-process run of the bundled model
#: peaks at about 1 GB RSS whatever the scene's size (Keras/TensorFlow or OpenVINO,
#: the strip accumulator and GDAL's cache; docs/benchmarks.md "Memory against scene size"), doubled for headroom.
MIN_WORKER_MEMORY = 2 * 2**30


def _worker_budget(workers: int) -> tuple[int, int]:
    """Cap a local cluster at the machine's cores and give each worker the memory it needs.

    Returns
    -------
    workers : int
        ``workers``, at most ``os.cpu_count()`` (a warning says when capped:
        more worker processes than cores only compete for them and split the
        memory).
    memory_limit : int
        Bytes per worker for dask's memory guard: the machine's memory shared
        among the workers, but never below :data:`MIN_WORKER_MEMORY` (nor above
        the whole machine), rather than dask's default of total / N.
    """
    import psutil

    cores = os.cpu_count() or 1
    if workers > cores:
        log.warning("--workers %d is more than this machine's %d core(s); starting %d worker(s)", workers, cores,
                    cores)
        workers = cores
    total = psutil.virtual_memory().total
    return workers, int(min(total, max(total // workers, MIN_WORKER_MEMORY)))


def _cuda_cluster(workers: int, env: dict):
    """A ``dask_cuda.LocalCUDACluster`` where dask-cuda is installed and there are enough GPUs, else None."""
    try:
        from dask_cuda import LocalCUDACluster
        from dask_cuda.utils import get_n_gpus
    except ImportError:
        return None
    try:
        if get_n_gpus() < workers:
            return None
    except Exception:  # noqa: BLE001 - no driver: not a GPU host
        return None
    return LocalCUDACluster(n_workers=workers, threads_per_worker=1, dashboard_address=":0",
                            silence_logs=logging.ERROR, env=env, resources={"GPU": 1})


def _fingerprint_options(options: dict, vector: bool) -> dict:
    """The options an output depends on (not the GDAL cache or read-ahead, which change no pixel)."""
    streaming = {k: options["streaming"][k] for k in ("strip_rows", "band_width")}
    return {"inference": options["inference"], "streaming": streaming, "output": options["output"],
            "vector": options["vector"] if vector else None}


def make_job(scene: str, out: Optional[str], vector: Optional[str], spec, *, overwrite: bool,
             parts: Union[int, str] = "auto", out_url: Optional[str] = None) -> SceneJob:
    """A :class:`SceneJob` with its fingerprint (the scene's files, the model's hash, the options, the version).

    Parameters
    ----------
    scene : str
    out, vector : str or None
        Final paths.
    spec : tiler.pipeline.RunSpec
        The run resolved once (:func:`tiler.pipeline.resolve_run`).
    overwrite : bool
    parts : int or "auto"
    out_url : str, optional
        Where the raster is uploaded (``out`` is then its file in the work folder).
    """
    fp = fingerprint(scene, spec.model, _fingerprint_options(spec.option_dicts(), vector is not None))
    return SceneJob(scene=scene, out=os.path.abspath(out) if out else None,
                    vector=os.path.abspath(vector) if vector else None, model=os.path.abspath(spec.model),
                    model_sha256=fp["model_sha256"], spec=spec, overwrite=overwrite, parts=parts,
                    fingerprint=digest(fp), out_url=out_url)


def _cumulative(progress):
    """``progress(done, total)`` over the parts of an in-process run: each part counts from 0, the bar does not."""
    if progress is None:
        return None
    state = {"base": 0, "last": (0, 0)}

    def call(done: int, total: int) -> None:
        if done < state["last"][0]:  # the next part started
            state["base"] += state["last"][1]
        state["last"] = (done, total)
        progress(state["base"] + done, state["base"] + total)

    return call


def _check_parts(parts) -> Union[int, str]:
    if parts in (None, "auto"):
        return "auto"
    try:
        n = int(parts)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise UsageError(f"--parts must be a positive number or auto, got {parts!r}")
    return n


def _raise_failure(result: SceneResult, error_type: Optional[str]) -> None:
    cls = getattr(errors, error_type or "", None)
    if not (isinstance(cls, type) and issubclass(cls, TilerError)):
        cls = TilerError
    raise cls(result.error)


def run(
    scene: PathLike,
    out: Union[None, PathLike, Destination] = None,
    *,
    vector: Union[None, PathLike, Destination] = None,
    model: Optional[PathLike] = None,
    inference: Optional[InferenceConfig] = None,
    streaming: Optional[StreamConfig] = None,
    output: Union[None, str, OutputConfig] = None,
    polygons: Optional[VectorConfig] = None,
    overwrite: bool = False,
    parts: Union[None, int, str] = "auto",
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    client: Any = None,
    retries: int = 0,
    progress=None,
    parts_progress=None,
    spec=None,
    worker_timeout: float = WORKER_TIMEOUT,
    **options: Any,
):
    """Segment one scene, in resumable parts where it is large or where workers are given.

    Without ``workers``, ``scheduler`` or ``client`` a scene of up to
    :data:`~tiler.distributed.WHOLE_MAX_STRIPS` strips (or any, with ``parts=1``) is streamed in this
    process by the call :func:`tiler.run_scene` makes (:func:`tiler.pipeline.run_resolved`: no job, journal or
    scheduler is involved); a larger one (or any, with
    ``parts``) is computed part by part into a work folder beside the output
    (``.NAME.tiler-parts``) with a journal, then assembled. Run again after a
    crash (SIGKILL included), the same call recomputes only the parts the
    journal lacks. The output is bit-identical to a one-process stream
    whatever the number of parts or workers.

    Parameters
    ----------
    scene, out, vector, model, inference, streaming, output, polygons, overwrite, **options
        As for :func:`tiler.run_scene` (``model`` a path: workers load it).
    parts : int or "auto", default "auto"
        Row bands to cut the scene into (see
        :func:`tiler.distributed.resolve_parts`).
    workers : int, optional
        Run the parts on a local dask cluster of this many processes.
    scheduler : str, optional
        Run them on an existing dask cluster.
    client : distributed.Client, optional
        Run them on this client's cluster.
    retries : int, default 0
        Reruns of a part that failed with an I/O error.
    progress : callable, optional
        ``progress(done, total)`` in patches (in-process runs).
    parts_progress : callable, optional
        ``progress(parts done, parts total, scenes done, scenes total)``.
    spec : tiler.pipeline.RunSpec, optional
        The run already resolved (the command resolves it once); then ``model``, the configs and
        ``options`` are not given.
    worker_timeout : float, default :data:`WORKER_TIMEOUT`
        With ``scheduler``: seconds to wait for a first worker (see :func:`cluster`).

    Returns
    -------
    RunReport
        With ``parts`` set for a run in parts.

    Raises
    ------
    TilerError
        As :func:`tiler.run_scene` (the same class for the same problem).
    ClusterError
        No worker joined the scheduler in time, or the scheduler was lost (:class:`SchedulerLost`; its
        finished parts are kept and the same call resumes); exit code 1.
    """

    t0 = time.perf_counter()
    parts = _check_parts(parts)
    if out is None and vector is None:
        raise UsageError("nothing to write: give a GeoTIFF (--out) and/or polygons (--vector)")
    if spec is None:
        spec = resolve_run(model=model, inference=inference,
                           streaming=streaming, output=output, polygons=polygons, raster=out is not None,
                           vector=vector is not None, **options)
    elif any(v is not None for v in (model, inference, streaming, output, polygons)) or options:
        raise UsageError("give either a resolved spec or the model and options, not both")
    if client is None and workers is None and scheduler is None:
        with rasterio.Env(**spec.streaming.gdal_env), \
                open_scene(scene, reference=spec.inference.reference) as sc:
            strips = len(list(spec.grid(sc.height, sc.width).strips(spec.streaming.strip_rows)))
            if resolve_parts(parts, strips) == 1:
                # One part in this process: the one-process run, the very call tiler.run_scene makes (no job,
                # fingerprint or scheduler: nothing to resume in a single stream).
                return run_resolved(spec, scene, out, vector, overwrite=overwrite, progress=progress, opened=sc)
    given = {k: v for k, v in (("out", out), ("vector", vector)) if isinstance(v, Destination)}
    specs = {"out": (out, GEOTIFF_SUFFIXES) if out is not None and "out" not in given else None,
             "vector": (vector, tuple(VECTOR_FORMATS)) if vector is not None and "vector" not in given else None}
    guarded = (guard_outputs(specs, inputs=[*scene_inputs(scene), spec.model, *(d.path for d in given.values())],
                             overwrite=overwrite) if any(specs.values())
               else contextlib.nullcontext({"out": None, "vector": None}))
    with guarded as guard, cluster(workers, scheduler, gdal_cache_mb=spec.streaming.gdal_cache_mb,
                                   worker_timeout=worker_timeout) as own:
        dests = {k: given.get(k) or guard[k] for k in ("out", "vector")}
        job = make_job(os.fspath(scene), dests["out"] and dests["out"].path, dests["vector"] and dests["vector"].path,
                       spec, overwrite=overwrite, parts=parts)
        result = execute([job], client if client is not None else own, retries=retries, destinations=[dests],
                         progress=parts_progress, patch_progress=_cumulative(progress))[0]
    if result.status == "failed":
        _raise_failure(result, result.error_type)
    rep = result.report
    if result.parts["total"] == 1:
        return RunReport(**{k: v for k, v in rep.items() if k in RunReport.__dataclass_fields__})
    listed = result.parts["list"]
    seconds: dict = {}
    for e in listed:
        for stage, v in (e.get("stages") or {}).items():
            seconds[stage] = seconds.get(stage, 0.0) + v
    task_seconds = sum(e.get("seconds") or 0.0 for e in listed)
    seconds.update(total=time.perf_counter() - t0, assembly=result.parts.get("assembly_seconds") or 0.0)
    split = result.parts.get("assembly_split") or {}
    seconds.update({f"assembly_{k}": v for k, v in split.items()})
    return run_report(spec, scene=rep["scene"], registration=rep["registration"], domain=rep["domain"],
                      out=dests["out"].location if dests["out"] else None, vector=rep["vector"], model_path=spec.model,
                      runtime=next((e["runtime"] for e in listed if e.get("runtime")), None),
                      predicted=sum(e.get("patches") or 0 for e in listed),
                      skipped_nodata=sum(e.get("skipped_nodata") or 0 for e in listed), seconds=seconds,
                      busy=seconds.get("predict", 0.0) / task_seconds if task_seconds else 0.0,
                      peak_rss=result.peak_rss_mb, processing_grid=rep["processing_grid"],
                      parts={**result.parts, "workers": result.workers})


@dataclass(frozen=True)
class BatchReport:
    """The summary of a :func:`batch` run (``--report batch.json``).

    Attributes
    ----------
    scenes : list of dict
        Per scene (in input order): scene, out, status (done, skipped,
        failed), seconds, pixels, parts, workers, peak_rss_mb, registration
        shifts, error.
    counts : dict
        Scenes done, skipped, failed.
    seconds : float
        Wall time of the batch.
    workers : int or None
        Workers of the cluster (None: in this process).
    options : dict
        The config values.
    tiler_version : str
    """

    scenes: list
    counts: dict
    seconds: float
    workers: Optional[int]
    options: dict
    tiler_version: str = __version__

    @property
    def failed(self) -> list[dict]:
        """The failed scenes' entries."""
        return [s for s in self.scenes if s["status"] == "failed"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"scenes": self.scenes, "counts": self.counts, "seconds": round(self.seconds, 3),
                "workers": self.workers, "options": self.options, "tiler_version": self.tiler_version}


def _existing_fingerprint(path: str) -> Optional[str]:
    if is_url(path):
        configure_gdal()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                return ds.tags().get(FINGERPRINT_TAG)
    except rasterio.errors.RasterioIOError:
        return None


def batch(
    inputs: Sequence[str],
    out_dir: PathLike,
    *,
    name: str = "{stem}.tif",
    model: Optional[PathLike] = None,
    inference: Optional[InferenceConfig] = None,
    streaming: Optional[StreamConfig] = None,
    output: Union[None, str, OutputConfig] = None,
    overwrite: bool = False,
    parts: Union[None, int, str] = "auto",
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    client: Any = None,
    retries: int = 0,
    on_error: str = "skip",
    progress=None,
    worker_timeout: float = WORKER_TIMEOUT,
    work_dir: Optional[str] = None,
    **options: Any,
) -> BatchReport:
    """Segment an archive of scenes: every scene a task (large ones in parts), resumable.

    Parameters
    ----------
    inputs : sequence of str
        Scenes, glob patterns, folders, list files, STAC documents (see
        :func:`tiler.distributed.expand_inputs`).
    out_dir : path-like
        Folder of the outputs (created if its parent exists), or an ``s3://bucket/prefix/``: each output is
        then written and verified in ``work_dir`` and uploaded whole when its scene is done.
    name : str, default "{stem}.tif"
        Output file name template (:func:`tiler.distributed.output_name`).
    model, inference, streaming, output, **options
        As for :func:`tiler.run_scene`.
    overwrite : bool, default False
        Replace an existing output that is not this run's (another
        fingerprint); without it such outputs are refused before any work.
        An output with this run's fingerprint is skipped either way.
    parts, workers, scheduler, client, retries
        As for :func:`run`.
    on_error : {"skip", "fail"}
        A failed scene is reported and the batch goes on, or the batch stops.
    progress : callable, optional
        ``progress(parts done, parts total, scenes done, scenes total)``.
    worker_timeout : float, default :data:`WORKER_TIMEOUT`
        With ``scheduler``: seconds to wait for a first worker (see :func:`cluster`).
    work_dir : str, optional
        The local work folder of outputs bound for object storage (the parts and journal of an
        interrupted scene stay there for the rerun); default :func:`tiler.storage.default_work_dir`.

    Returns
    -------
    BatchReport

    Raises
    ------
    UsageError
        Bad options, no scene, two scenes with one output, an output that is
        an input, or existing outputs of another run without ``overwrite``
        (CLI exit code 2); nothing is written.
    BatchAborted
        A scene failed and ``on_error="fail"`` (exit code 1).
    ClusterError
        No worker joined the scheduler in time; or :class:`SchedulerLost`: the scheduler went away, the
        finished scenes are kept and the same call resumes (exit code 1). Both carry the batch report.
    """

    t0 = time.perf_counter()
    if on_error not in ("skip", "fail"):
        raise UsageError(f"--on-error must be skip or fail, got {on_error!r}")
    parts = _check_parts(parts)
    spec = resolve_run(model=model, inference=inference,
                       streaming=streaming, output=output, raster=True, vector=False, **options)
    scenes = expand_inputs(inputs)
    if is_url(os.fspath(out_dir)):  # a bucket prefix: each output written in the work folder, uploaded whole
        out_dir = os.fspath(out_dir)
        if scheme_of(out_dir) not in WRITE_SCHEMES:
            raise OutputPathError(f"--out-dir {redact(out_dir)}: tiler writes to s3:// prefixes and local folders")
        check_bucket(out_dir, "--out-dir")
        return _batch_in(out_dir, scenes, name, spec, overwrite=overwrite, parts=parts, workers=workers,
                         scheduler=scheduler, client=client, retries=retries, on_error=on_error, progress=progress,
                         t0=t0, worker_timeout=worker_timeout, work_dir=work_dir or default_work_dir())
    out_dir = os.path.abspath(os.fspath(out_dir))
    made = not os.path.isdir(out_dir)
    if made:
        if not os.path.isdir(os.path.dirname(out_dir)):
            raise OutputPathError(f"--out-dir {out_dir!r}: its parent folder does not exist; create it first")
        os.makedirs(out_dir, exist_ok=True)
    try:
        return _batch_in(out_dir, scenes, name, spec, overwrite=overwrite, parts=parts, workers=workers,
                         scheduler=scheduler, client=client, retries=retries, on_error=on_error, progress=progress,
                         t0=t0, worker_timeout=worker_timeout)
    except BaseException:
        if made:  # a batch that failed before writing anything leaves no empty --out-dir behind
            try:
                os.rmdir(out_dir)
            except OSError:
                pass
        raise


def _batch_in(out_dir: str, scenes: list, name: str, spec, *, overwrite, parts, workers, scheduler, client, retries,
              on_error, progress, t0, worker_timeout, work_dir: Optional[str] = None) -> BatchReport:
    """:func:`batch` once its options are checked and ``out_dir`` exists (or is a bucket prefix, with ``work_dir``)."""
    model_path = spec.model
    outputs: dict[str, str] = {}
    for s in scenes:
        path = (join(out_dir, output_name(name, s, model_path)) if work_dir is not None
                else os.path.join(out_dir, output_name(name, s, model_path)))
        if path in outputs:
            raise OutputPathError(f"scenes {outputs[path]!r} and {s!r} would both write {path!r}; give --name a "
                                  "template that tells them apart, e.g. '{stem}_{model}.tif', or rename one")
        outputs[path] = s
    inputs = {f if is_url(f) else os.path.realpath(f) for s in scenes for f in scene_inputs(s)}
    clashes = [(path, s) for path, s in outputs.items() if (path if is_url(path) else os.path.realpath(path)) in inputs]
    if clashes:  # said at once: --overwrite would not help
        path, s = clashes[0]
        raise OutputPathError(
            f"--out-dir {out_dir!r}: {len(clashes)} output(s) would overwrite input(s), e.g. {path!r} is an input "
            f"(of {s!r}); tiler never replaces its input: choose another --out-dir, or a --name template such as "
            "'{stem}_mask.tif'")
    # Checks every output (suffix, folder, not an input, not existing without --overwrite) before any work;
    # existing outputs with this run's fingerprint are skipped instead.
    opts = spec.option_dicts()
    jobs, skipped, refused = [], [], []
    for path, s in outputs.items():
        if work_dir is not None:  # the job writes the work folder's file for the URL; the commit uploads it
            job = make_job(s, work_path(path, work_dir), None, spec, overwrite=overwrite, parts=parts, out_url=path)
            there = exists(path, f"output of {redact(s)}")
        else:
            job = make_job(s, path, None, spec, overwrite=overwrite, parts=parts)
            there = os.path.exists(path)
        if there and _existing_fingerprint(path) == job.fingerprint:
            skipped.append(job)
        elif there and not overwrite:
            refused.append(redact(path))
        else:
            jobs.append(job)
    if refused:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise OutputExistsError(f"{len(refused)} output(s) exist from another run (other inputs, model or options): "
                                f"{shown}; pass --overwrite to replace them, or choose another --out-dir")
    all_inputs = [model_path, *(f for s in scenes for f in scene_inputs(s))]
    for k in range(0, len(jobs), 256):  # in chunks: each check takes a lock (a file descriptor) for a moment
        with guard_outputs({f"output of {redact(job.scene)}": (job.out_url or job.out, GEOTIFF_SUFFIXES)
                            for job in jobs[k:k + 256]}, inputs=all_inputs, overwrite=True, work_dir=work_dir):
            pass  # checked; each scene takes its own lock while it runs
    with cluster(workers, scheduler, gdal_cache_mb=spec.streaming.gdal_cache_mb,
                 worker_timeout=worker_timeout) as own:
        the_client = client if client is not None else own
        n_workers = len(the_client.nthreads()) if the_client is not None else None
        try:
            ran = execute(jobs, the_client, retries=retries, on_error=on_error, progress=progress)
        except (BatchAborted, SchedulerLost) as exc:  # the report still says what was done, failed, not finished
            exc.report = _batch_report(outputs, jobs, exc.results, skipped, t0, n_workers, opts)
            raise
    return _batch_report(outputs, jobs, ran, skipped, t0, n_workers, opts)


def _batch_report(outputs: dict, jobs: list, ran: list, skipped: list, t0: float, n_workers: Optional[int],
                  opts: dict) -> BatchReport:
    results = {j.out: r for j, r in zip(jobs, ran)}
    order = {path: n for n, path in enumerate(outputs)}
    for job in skipped:
        results[job.out] = SceneResult(redact(job.scene), redact(job.out_url) if job.out_url else job.out,
                                       status="skipped")
    entries = [results[j.out].to_dict() for j in sorted([*jobs, *skipped], key=lambda j: order[j.out_url or j.out])]
    counts = {k: sum(1 for e in entries if e["status"] == k) for k in ("done", "skipped", "failed")}
    for status in ("not started", "not finished"):  # a batch stopped by --on-error fail, or by a lost scheduler
        stopped = sum(1 for e in entries if e["status"] == status)
        if stopped:
            counts[status] = stopped
    return BatchReport(scenes=entries, counts=counts, seconds=time.perf_counter() - t0, workers=n_workers,
                       options={k: opts[k] for k in ("inference", "streaming", "output")})
