"""Scheduling the tasks of many scenes over dask.distributed (or in this process), with the journal.

Per scene: :func:`~tiler.distributed._tasks.start` (a small scene is run
whole right there); for a scene in parts, every part the journal lacks is
submitted, each finished part is journalled, and when all are there
:func:`~tiler.distributed._tasks.assemble` writes the products. Tasks of all
scenes are in flight together, so one slow gigapixel scene does not hold up a
batch.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from tiler import _signals
from tiler.destination import Destination, RemoteDestination, clean_stale
from tiler.distributed._journal import Journal
from tiler.distributed._tasks import SceneJob, assemble, run_part, start
from tiler.errors import TilerError, describe_failure
from tiler.storage import redact

__all__ = ["SceneResult", "execute", "BatchAborted", "ClusterError", "SchedulerLost"]

log = logging.getLogger(__name__)

PartsProgress = Callable[[int, int, int, int], None]
"""``progress(parts done, parts total, scenes done, scenes total)``."""


class BatchAborted(TilerError):
    """A scene failed and ``on_error="fail"``: the run stopped (CLI exit code 1).

    Attributes
    ----------
    results : list of SceneResult
        Every scene of the run as it stood: done, failed, or ``not started``
        (pending when the run stopped).
    report : object or None
        Set by :func:`tiler.distributed.batch` to the :class:`BatchReport` of
        the stopped batch, so that ``--report`` is still written.
    """

    def __init__(self, message: str, results: Optional[list] = None) -> None:
        super().__init__(message)
        self.results = list(results or [])
        self.report = None


class ClusterError(TilerError):
    """The dask cluster cannot run the work: no worker joined in time (CLI exit code 1)."""


class SchedulerLost(ClusterError):
    """The dask scheduler went away in the middle of a run (CLI exit code 1): the same command resumes.

    Attributes
    ----------
    results : list of SceneResult
        Every scene as it stood: ``done`` (its outputs committed), ``failed``, or ``not finished``.
    report : object or None
        Set by :func:`tiler.distributed.batch` to the :class:`BatchReport`, so that ``--report`` is written.
    """

    def __init__(self, message: str, results: Optional[list] = None) -> None:
        super().__init__(message)
        self.results = list(results or [])
        self.report = None


def _scheduler_lost(exc: BaseException, client) -> bool:
    """Whether a task's error is the loss of the scheduler, not a failure of its own: every future cancelled
    (``scheduler-connection-lost``), or the connection to the scheduler closed while a result was fetched
    (``CommClosedError``, a reset connection); a task's own errors come back as they were raised."""
    if client is None:
        return False
    if isinstance(exc, concurrent.futures.CancelledError):
        return "scheduler-connection-lost" in str(exc) or getattr(client, "status", "running") != "running"
    return type(exc).__name__ == "CommClosedError" or isinstance(exc, ConnectionError)


@dataclass
class SceneResult:
    """The outcome of one scene of a distributed run or batch.

    Attributes
    ----------
    scene : str
    out : str or None
        The raster (or, without one, the polygons) written.
    status : {"done", "skipped", "failed", "not started", "not finished", "pending"}
        ``skipped``: the output exists with this run's fingerprint; ``not
        started``: a batch stopped by ``--on-error fail`` before its turn;
        ``not finished``: the scheduler was lost before it was done (its finished parts are kept).
    seconds : float
        Seconds its tasks ran (on whichever workers; parts reused from an
        earlier run not counted).
    wall_seconds : float
        From the scene's first task's submission to its end (queueing included).
    pixels : int
        Output pixels (width x height).
    parts : dict
        ``total``, ``computed``, ``reused`` (journalled by an earlier run),
        and per part its rows, seconds and worker.
    workers : list of str
        Workers that ran its tasks.
    peak_rss_mb : float
        Highest peak resident memory of those worker processes, MB.
    registration : dict or None
        Per band group: shift, model, residual (the run report's).
    error : str or None
        Why it failed.
    error_type : str or None
        The class of the error (a :mod:`tiler.errors` name where it was one).
    report : dict or None
        The run report (:class:`tiler.reports.RunReport` as a dict).
    """

    scene: str
    out: Optional[str]
    status: str = "pending"
    seconds: float = 0.0
    wall_seconds: float = 0.0
    pixels: int = 0
    parts: dict = field(default_factory=lambda: {"total": 0, "computed": 0, "reused": 0, "list": []})
    workers: list = field(default_factory=list)
    peak_rss_mb: float = 0.0
    registration: Optional[dict] = None
    error: Optional[str] = None
    error_type: Optional[str] = None
    report: Optional[dict] = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the full run report)."""
        return {"scene": self.scene, "out": self.out, "status": self.status, "seconds": round(self.seconds, 3),
                "wall_seconds": round(self.wall_seconds, 3),
                "pixels": self.pixels, "parts": self.parts, "workers": self.workers,
                "peak_rss_mb": self.peak_rss_mb, "registration": _shifts(self.registration), "error": self.error}


def _shifts(reg: Optional[dict]) -> Optional[dict]:
    if not reg or reg.get("off"):
        return reg
    return {name: {k: g.get(k) for k in ("status", "model", "shift_group_px", "shift_m",
                                         "residual_rms_reference_px")}
            for name, g in reg.get("groups", {}).items() if g.get("status") != "reference"}


class _Lazy:
    """A task of an in-process run: it runs when its result is first asked for (in submission order)."""

    def __init__(self, fn, args, kwargs, retries: int) -> None:
        self.fn, self.args, self.kwargs, self.retries = fn, args, kwargs, retries
        self._done = False
        self._value: Any = None
        self._error: Optional[BaseException] = None

    def result(self):
        if not self._done:
            for attempt in range(self.retries + 1):
                try:
                    self._value, self._error = self.fn(*self.args, **self.kwargs), None
                    break
                except Exception as exc:  # noqa: BLE001 - what dask's retries= retries too
                    _signals.check()  # a library may have turned SIGTERM into another error
                    self._error = exc
                    if attempt < self.retries:
                        log.warning("%s failed (%s); retrying", self.fn.__name__, exc)
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        self._done, self._error = True, concurrent.futures.CancelledError()


class _Inline:
    """Runs the tasks in this process, one after the other: the scheduler of a run without a cluster."""

    def __init__(self, retries: int) -> None:
        self.retries = retries

    def submit(self, fn, *args, **kwargs) -> _Lazy:
        return _Lazy(fn, args, kwargs, self.retries)

    def completed(self, first: Iterable) -> "_InlineQueue":
        return _InlineQueue(first)


class _InlineQueue:
    def __init__(self, first: Iterable) -> None:
        self.q = deque(first)

    def add(self, fut) -> None:
        self.q.append(fut)

    def __iter__(self):
        while self.q:
            yield self.q.popleft()


class _Dask:
    """Submits tasks to a dask.distributed client."""

    def __init__(self, client, retries: int) -> None:
        self.client, self.retries = client, retries
        self._n = 0

    def submit(self, fn, *args, **kwargs):
        self._n += 1
        resources = {"GPU": 1} if _gpu_workers(self.client) else None
        return self.client.submit(fn, *args, retries=self.retries, pure=False, resources=resources,
                                  key=f"tiler-{fn.__name__}-{self._n}-{os.getpid()}", **kwargs)

    def completed(self, first: Iterable):
        from distributed import as_completed

        return as_completed(list(first))


def _gpu_workers(client) -> bool:
    """Whether the cluster's workers declare a ``GPU`` resource (then each task takes one)."""
    cached = getattr(client, "_tiler_gpu", None)
    if cached is None:
        info = client.scheduler_info().get("workers", {})
        cached = bool(info) and all("GPU" in (w.get("resources") or {}) for w in info.values())
        try:
            client._tiler_gpu = cached
        except AttributeError:
            pass
    return cached


def _describe_failure(exc: BaseException, what: str, client=None) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        limit = getattr(client, "_tiler_memory_limit", None)
        guard = (f"dask's memory guard restarts a worker that reaches 95 % of its {limit // 2**20} MB limit"
                 if limit else "dask's memory guard restarts a worker that reaches 95 % of its memory limit")
        return (f"the worker running {what} died each time it was tried: out of memory ({guard}) or killed; "
                "lower --batch-size or --strip-rows, use fewer --workers (each then gets more memory), or "
                "give the workers more memory")
    return describe_failure(exc, what)


def execute(jobs: list[SceneJob], client=None, *, retries: int = 0, on_error: str = "skip",
            destinations: Optional[list[dict]] = None, progress: Optional[PartsProgress] = None,
            patch_progress=None) -> list[SceneResult]:
    """Run scenes as tasks: whole or in parts, resumable from their journals.

    Parameters
    ----------
    jobs : list of SceneJob
    client : distributed.Client, optional
        Where tasks run; None: one after the other in this process.
    retries : int, default 0
        Reruns of a task that raised (a transient I/O error); errors of the
        input are not retried.
    on_error : {"skip", "fail"}
        ``skip``: a failed scene is reported and the others go on; ``fail``:
        stop everything at the first failure (:class:`BatchAborted`).
    destinations : list of dict, optional
        Per job, ``{"out": Destination or None, "vector": Destination or None}``
        that the caller guarded and locked (:func:`tiler.distributed.run`: the
        command's transaction, committed by the caller). Default: each scene
        takes its destinations' locks while it runs and commits its outputs as
        soon as they are complete (a batch: a finished scene is kept whatever
        happens to the others).
    progress : callable, optional
        ``progress(parts done, parts total, scenes done, scenes total)``.
    patch_progress : callable, optional
        ``progress(done, total)`` in patches, passed to the tasks of an
        in-process run (one scene).

    Returns
    -------
    list of SceneResult
        In the order of ``jobs``.

    Raises
    ------
    BatchAborted
        A scene failed and ``on_error="fail"``.
    """
    runner = _Dask(client, retries) if client is not None else _Inline(retries)
    return _Execution(jobs, runner, client, on_error=on_error, progress=progress,
                      patch_progress=patch_progress if client is None else None).run(destinations)


@dataclass
class _SceneState:
    """Where one scene of an :func:`execute` stands."""

    t0: float  # perf_counter() when its first task was submitted
    locks: list = field(default_factory=list)  # its destinations, locked while it runs
    dests: dict = field(default_factory=dict)  # "out"/"vector" -> its Destination (None where not written)
    prepared: Optional[dict] = None  # the start task's result for a scene in parts
    parts: dict = field(default_factory=dict)  # part index -> its journal entry
    journal: Optional[Journal] = None
    space_warned: bool = False  # the projected disk need was said (once per scene)


def space_needed(parts: Iterable[dict], rows_total: int) -> tuple[int, int]:
    """The disk a scene in parts still needs, projected from the parts done: ``(bytes, part bytes so far)``.

    The remaining parts take the measured bytes per row of those done; the assembled outputs (the class map
    or probabilities, the GeoPackage) are about the size of all the part files together, since they hold the
    same blocks and features with the same compression, and are written while the part files still exist.

    Parameters
    ----------
    parts : iterable of dict
        :func:`~tiler.distributed._tasks.run_part`'s results (``rows``, ``sizes`` in bytes).
    rows_total : int
        Output rows of the scene.

    Returns
    -------
    tuple of int
        Bytes still to be written (remaining part files and the outputs), and the bytes of the part files
        done; ``(0, 0)`` before a part has rows.
    """
    rows = written = 0
    for entry in parts:
        rows += int(entry["rows"][1]) - int(entry["rows"][0])
        written += sum(int(v) for v in entry.get("sizes", {}).values())
    if rows == 0:
        return 0, 0
    total = written * rows_total / rows
    return int(round(total - written + total)), written


@dataclass(frozen=True)
class _Task:
    """What a submitted future is: a scene's ``start``, one of its ``part`` tasks, or its ``assemble``."""

    kind: str
    scene: int
    part: Optional[int] = None

    def what(self) -> str:
        """How a failure message names it."""
        return {"start": "running the scene", "part": f"part {self.part}", "assemble": "assembling the parts"}[
            self.kind]


class _Execution:
    """One :func:`execute`: submits each scene's tasks as the previous ones finish, and settles each scene."""

    def __init__(self, jobs: list[SceneJob], runner, client, *, on_error: str,
                 progress: Optional[PartsProgress], patch_progress) -> None:
        self.jobs, self.runner, self.client, self.on_error = jobs, runner, client, on_error
        self.progress = progress
        self.extra = {"progress": patch_progress} if patch_progress is not None else {}
        self.results = [SceneResult(redact(j.scene), redact(j.out_url) if j.out_url else j.out or j.vector)
                        for j in jobs]
        self.states: dict[int, _SceneState] = {}
        self.parts_done, self.parts_total, self.scenes_done = 0, len(jobs), 0
        self.futures: dict[Any, _Task] = {}
        self.queue = runner.completed([])

    def run(self, destinations: Optional[list[dict]]) -> list[SceneResult]:
        """Submit every scene's start, then react to each finished task until all scenes are settled."""
        try:
            for i, job in enumerate(self.jobs):
                self.states[i] = _SceneState(time.perf_counter())
                if destinations is not None:
                    self.states[i].dests = dict(destinations[i])
                elif not self._lock(i, job):
                    continue
                self._submit(_Task("start", i), start, job)
            for fut in self.queue:
                task = self.futures.pop(fut, None)
                if task is None:
                    continue  # cancelled with its scene
                try:
                    res = fut.result()
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001 - a task that kept failing fails its scene
                    if _scheduler_lost(exc, self.client):
                        raise self._lost() from None
                    self._finish(task.scene, "failed", _describe_failure(exc, task.what(), self.client),
                                 type(exc).__name__)
                    continue
                finally:
                    # Its result is ours now: a future still held would be recomputed if its worker died later
                    # (dask keeps what a client holds), staging a second copy of products nobody takes.
                    release = getattr(fut, "release", None)
                    if release is not None:
                        try:
                            release()
                        except Exception:  # noqa: BLE001 - a lost scheduler: nothing left to release
                            pass
                    del fut
                self._note_worker(task.scene, res)
                if res.get("error"):
                    self._finish(task.scene, "failed", res["error"], res.get("error_type"))
                elif task.kind == "start":
                    self._started(task.scene, res)
                elif task.kind == "part":
                    self._part_done(task.scene, res)
                else:
                    self._assembled(task.scene, res)
        except BaseException as exc:
            self._stop(interrupted=not isinstance(exc, BatchAborted))
            raise
        # A worker killed while it wrote (dask reran its task elsewhere) left its temporary file: its process
        # is gone, so it goes now rather than at the next command.
        for folder in sorted({os.path.dirname(p) for j in self.jobs for p in (j.out, j.vector) if p}):
            clean_stale(folder)
        return self.results

    def _lost(self) -> SchedulerLost:
        """The error of a lost scheduler: every unfinished scene marked ``not finished``, counted in the message."""
        for r in self.results:
            if r.status == "pending":
                r.status = "not finished"
        done = sum(1 for r in self.results if r.status == "done")
        unfinished = sum(1 for r in self.results if r.status == "not finished")
        parts = sum(len(st.parts) for i, st in self.states.items() if self.results[i].status == "not finished")
        kept = f", {parts} finished part(s) of them kept in their work folders" if parts else ""
        address = getattr(getattr(self.client, "scheduler", None), "address", None) or "its address"
        return SchedulerLost(f"lost the dask scheduler at {address}; {done} scene(s) done, {unfinished} "
                             f"unfinished{kept}; start the scheduler and its workers again and run the same command "
                             "to resume", self.results)

    def _lock(self, i: int, job: SceneJob) -> bool:
        """Take the scene's destination locks; a scene whose output is busy fails here (False)."""
        st = self.states[i]
        try:
            st.dests = {k: Destination(p, overwrite=job.overwrite) if p else None
                        for k, p in (("out", job.out), ("vector", job.vector))}
            if job.out_url is not None:  # written in the work folder, uploaded at the commit
                st.dests["out"] = RemoteDestination(job.out_url, overwrite=job.overwrite, local=job.out)
            st.locks = [d for d in st.dests.values() if d is not None]
            for d in st.locks:
                d.lock()
        except TilerError as exc:
            self._finish(i, "failed", str(exc), type(exc).__name__)
            return False
        return True

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self.parts_done, self.parts_total, self.scenes_done, len(self.jobs))

    def _submit(self, task: _Task, fn, *args) -> None:
        fut = self.runner.submit(fn, *args, **(self.extra if fn is not assemble else {}))
        self.futures[fut] = task
        self.queue.add(fut)

    def _note_worker(self, i: int, res: dict) -> None:
        r = self.results[i]
        w = res.get("worker")
        if w and w not in r.workers:
            r.workers.append(w)
        r.peak_rss_mb = max(r.peak_rss_mb, float(res.get("peak_rss_mb") or 0.0))
        r.seconds += float(res.get("task_seconds") or 0.0)

    def _started(self, i: int, res: dict) -> None:
        """The start task ran the scene whole (done), or prepared it in parts: submit those the journal lacks."""
        job, r, st = self.jobs[i], self.results[i], self.states[i]
        if res["status"] == "done":
            if not self._commit(i, res):
                return
            r.report = res["report"]
            r.pixels = r.report["scene"]["width"] * r.report["scene"]["height"]
            r.registration = r.report["registration"]
            r.parts.update(total=1, computed=1)
            self.parts_done += 1
            self._finish(i, "done")
            return
        bands = res["bands"]
        st.prepared = res
        r.pixels = res["summary"]["width"] * res["summary"]["height"]
        r.registration = res["registration"]
        self.parts_total += len(bands) - 1
        st.journal = Journal(job.work)
        done = st.journal.start(_fingerprint_detail(job), [b.emit_rows for b in bands])
        clean_stale(job.work)
        r.parts.update(total=len(bands), reused=len(done))
        for b in bands:
            if b.index in done:
                st.parts[b.index] = done[b.index]
                self.parts_done += 1
            else:
                self._submit(_Task("part", i, b.index), run_part, job, res, b)
        self._tick()
        if len(done) == len(bands):
            self._submit(_Task("assemble", i), assemble, job, res, [done[b.index] for b in bands])

    def _part_done(self, i: int, res: dict) -> None:
        st = self.states[i]
        st.journal.append(res)
        st.parts[res["part"]] = res
        self.results[i].parts["computed"] += 1
        self.parts_done += 1
        self._tick()
        self._check_space(i)
        bands = st.prepared["bands"]
        if len(st.parts) == len(bands):
            self._submit(_Task("assemble", i), assemble, self.jobs[i], st.prepared,
                         [st.parts[b.index] for b in bands])

    def _check_space(self, i: int) -> None:
        """Say once, as soon as the parts done show it, that the work folder's disk cannot hold what the scene
        still writes (:func:`space_needed`): the user can free space while the run goes on."""
        st, job = self.states[i], self.jobs[i]
        if st.space_warned:
            return
        context = st.prepared["context"]  # the products' grid: the part rows are its rows
        need, written = space_needed(st.parts.values(), context.height)
        try:
            free = shutil.disk_usage(job.work).free
        except OSError:
            return
        if need > free:
            st.space_warned = True
            width, bands = context.width, st.prepared["bands"]
            done_rows = sum(int(e["rows"][1]) - int(e["rows"][0]) for e in st.parts.values())
            log.warning(
                "%s: the disk of the work folder %s has %.0f MB free; the %d remaining part(s) and the assembled "
                "outputs need about %.0f MB more (measured on the %d part(s) done: %.2f bytes per scene pixel): "
                "free %.0f MB now, or the run stops when the disk is full (its finished parts are kept and the "
                "same command resumes)", redact(job.scene), job.work, free / 1e6, len(bands) - len(st.parts),
                need / 1e6, len(st.parts), written / max(1, done_rows * width), (need - free) / 1e6)

    def _commit(self, i: int, res: dict) -> bool:
        """Take over the products a task staged; commit them (or stage them in the caller's transaction).
        False (the scene failed) where that is refused."""
        st = self.states[i]
        try:
            for key, path in (res.get("staged") or {}).items():
                if path is not None:
                    st.dests[key].take(path)
            for d in st.dests.values():
                if d is not None and d.tmp is not None:
                    d.commit()
        except TilerError as exc:
            for d in st.dests.values():
                if d is not None:
                    d.discard()
            self._finish(i, "failed", str(exc), type(exc).__name__)
            return False
        return True

    def _assembled(self, i: int, res: dict) -> None:
        r, st = self.results[i], self.states[i]
        if not self._commit(i, res):
            return
        pending = [d for d in st.dests.values() if d is not None and d.staged is not None]
        if pending:  # committed later with the caller's other outputs: the parts stay until that commit is done
            pending[-1].after_publish.append(st.journal.remove)
        else:
            st.journal.remove()
        clean_stale(os.path.dirname(st.journal.folder))
        prep = st.prepared
        r.parts["assembly_seconds"] = res["seconds"]
        r.parts["assembly_split"] = res.get("split")
        r.parts["list"] = [{k: e.get(k) for k in ("part", "rows", "seconds", "worker", "patches", "skipped_nodata",
                                                  "stages", "runtime")}
                           for e in (st.parts[b.index] for b in prep["bands"])]
        r.report = {"scene": prep["summary"], "registration": prep["registration"],
                    "domain": prep["domain"], "vector": res["vector"], "processing_grid": prep["processing_grid"]}
        self._finish(i, "done")

    def _finish(self, i: int, status: str, error: Optional[str] = None, error_type: Optional[str] = None) -> None:
        """Settle a scene: release its locks; a failure cancels its tasks and keeps or removes its parts."""
        if status == "failed":
            _signals.check()  # a failure caused by SIGTERM (turned into another error) is the signal
        r, st = self.results[i], self.states[i]
        r.status, r.error, r.error_type = status, error, error_type
        r.wall_seconds = time.perf_counter() - st.t0
        for d in st.locks:
            d.release()
        st.locks = []
        self.scenes_done += 1
        if status == "failed":
            kept = _settle_work(st.journal)
            if kept:
                r.error = error = f"{error}; {kept}"
            log.info("%s failed: %s", r.scene, error)
            for fut, task in list(self.futures.items()):
                if task.scene == i:
                    fut.cancel()
                    self.futures.pop(fut, None)
            if self.on_error == "fail":
                for other in self.results:
                    if other.status == "pending":
                        other.status = "not started"
                raise BatchAborted(f"scene {r.scene!r} failed: {error}; stopped (--on-error fail)", self.results)
        self._tick()

    def _stop(self, interrupted: bool) -> None:
        """Stopped early: cancel every task, release every lock; interrupted, keep the unfinished parts."""
        for fut in list(self.futures):
            try:
                fut.cancel()
            except Exception:  # noqa: BLE001 - a lost scheduler cannot be told; its futures are gone anyway
                log.debug("could not cancel %s", fut)
        for st in self.states.values():
            for d in st.locks:
                d.release()
            st.locks = []
        if interrupted:  # the unfinished scenes' work folders
            for i, st in self.states.items():
                if self.results[i].status not in ("done", "failed"):
                    kept = _settle_work(st.journal)
                    if kept:
                        _signals.keep(kept)


def _settle_work(journal: Optional[Journal]) -> Optional[str]:
    """After a scene in parts failed or was interrupted: remove a work folder that holds no finished part;
    otherwise keep it for a rerun and return the sentence that says where it is and what to do.

    Returns
    -------
    str or None
        None when nothing was kept.
    """
    if journal is None or not os.path.isdir(journal.folder):
        return None
    done = sum(1 for e in journal.read()[1:] if e.get("kind") == "part")
    if done == 0:
        journal.remove()
        return None
    return (f"{done} finished part(s) kept in {journal.folder}: run the same command again to resume from them, "
            f"or remove them with: rm -r '{journal.folder}'")


def _fingerprint_detail(job: SceneJob) -> dict:
    """What the journal header records: the digest's inputs, in short."""
    return {"digest": job.fingerprint, "scene": job.scene, "model_sha256": job.model_sha256,
            "options": job.options}
