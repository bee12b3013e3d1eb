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
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from tiler import _signals
from tiler.destination import Destination, clean_stale
from tiler.distributed._journal import Journal
from tiler.distributed._tasks import SceneJob, assemble, run_part, start
from tiler.errors import TilerError

__all__ = ["SceneResult", "execute", "BatchAborted"]

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


@dataclass
class SceneResult:
    """The outcome of one scene of a distributed run or batch.

    Attributes
    ----------
    scene : str
    out : str or None
        The raster (or, without one, the polygons) written.
    status : {"done", "skipped", "failed", "not started", "pending"}
        ``skipped``: the output exists with this run's fingerprint; ``not
        started``: a batch stopped by ``--on-error fail`` before its turn.
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
    return f"{what} failed: {name}: {exc}"


def execute(jobs: list[SceneJob], client=None, *, retries: int = 0, on_error: str = "skip",
            lock: bool = True, progress: Optional[PartsProgress] = None,
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
    lock : bool, default True
        Take each scene's destination lock while it runs (False: the caller
        holds them).
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
    extra = {"progress": patch_progress} if client is None and patch_progress is not None else {}
    results = [SceneResult(j.scene, j.out or j.vector) for j in jobs]
    state: dict[int, dict] = {}
    locks: dict[int, list[Destination]] = {}
    counts = {"parts_done": 0, "parts_total": len(jobs), "scenes_done": 0}
    futures: dict[Any, tuple[str, int, Any]] = {}

    def tick() -> None:
        if progress is not None:
            progress(counts["parts_done"], counts["parts_total"], counts["scenes_done"], len(jobs))

    def finish(i: int, status: str, error: Optional[str] = None, error_type: Optional[str] = None) -> None:
        if status == "failed":
            _signals.check()  # a failure caused by SIGTERM (turned into another error) is the signal
        r = results[i]
        r.status, r.error, r.error_type = status, error, error_type
        r.wall_seconds = time.perf_counter() - state[i]["t0"]
        for d in locks.pop(i, []):
            d.release()
        counts["scenes_done"] += 1
        if status == "failed":
            kept = _settle_work(state[i].get("journal"))
            if kept:
                r.error = error = f"{error}; {kept}"
            log.info("%s failed: %s", r.scene, error)
            for fut, (_, j, _) in list(futures.items()):
                if j == i:
                    fut.cancel()
                    futures.pop(fut, None)
            if on_error == "fail":
                for other in results:
                    if other.status == "pending":
                        other.status = "not started"
                raise BatchAborted(f"scene {r.scene!r} failed: {error}; stopped (--on-error fail)", results)
        tick()

    def submit(kind: str, i: int, fn, *args, ref: Any = None):
        fut = runner.submit(fn, *args, **(extra if fn is not assemble else {}))
        futures[fut] = (kind, i, ref)
        queue.add(fut)

    def note_worker(i: int, res: dict) -> None:
        w = res.get("worker")
        if w and w not in results[i].workers:
            results[i].workers.append(w)
        results[i].peak_rss_mb = max(results[i].peak_rss_mb, float(res.get("peak_rss_mb") or 0.0))
        results[i].seconds += float(res.get("task_seconds") or 0.0)

    queue = runner.completed([])
    try:
        for i, job in enumerate(jobs):
            state[i] = {"t0": time.perf_counter()}
            if lock:
                try:
                    locks[i] = [Destination(p, overwrite=job.overwrite) for p in (job.out, job.vector) if p]
                    for d in locks[i]:
                        d.lock()
                except TilerError as exc:
                    finish(i, "failed", str(exc), type(exc).__name__)
                    continue
            submit("start", i, start, job)
        for fut in queue:
            if fut not in futures:
                continue  # cancelled with its scene
            kind, i, ref = futures.pop(fut)
            job, r = jobs[i], results[i]
            try:
                res = fut.result()
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - a task that kept failing fails its scene
                what = {"start": "opening the scene", "part": f"part {ref}", "assemble": "assembling"}[kind]
                finish(i, "failed", _describe_failure(exc, what, client), type(exc).__name__)
                continue
            if res.get("error"):
                note_worker(i, res)
                finish(i, "failed", res["error"], res.get("error_type"))
                continue
            note_worker(i, res)
            if kind == "start" and res["status"] == "done":
                r.report = res["report"]
                r.pixels = r.report["scene"]["width"] * r.report["scene"]["height"]
                r.registration = r.report["registration"]
                r.parts.update(total=1, computed=1)
                counts["parts_done"] += 1
                finish(i, "done")
            elif kind == "start":
                bands = res["bands"]
                state[i].update(prepared=res, parts={})
                r.pixels = res["summary"]["width"] * res["summary"]["height"]
                r.registration = res["registration"]
                counts["parts_total"] += len(bands) - 1
                journal = Journal(job.work)
                done = journal.start(_fingerprint_detail(job), [b.emit_rows for b in bands])
                clean_stale(job.work)
                state[i]["journal"] = journal
                r.parts.update(total=len(bands), reused=len(done))
                for b in bands:
                    if b.index in done:
                        state[i]["parts"][b.index] = done[b.index]
                        counts["parts_done"] += 1
                    else:
                        submit("part", i, run_part, job, res, b, ref=b.index)
                tick()
                if len(done) == len(bands):
                    submit("assemble", i, assemble, job, res, [done[b.index] for b in bands])
            elif kind == "part":
                state[i]["journal"].append(res)
                state[i]["parts"][res["part"]] = res
                r.parts["computed"] += 1
                counts["parts_done"] += 1
                tick()
                bands = state[i]["prepared"]["bands"]
                if len(state[i]["parts"]) == len(bands):
                    submit("assemble", i, assemble, job, state[i]["prepared"],
                           [state[i]["parts"][b.index] for b in bands])
            else:  # assembled
                prep = state[i]["prepared"]
                r.parts["assembly_seconds"] = res["seconds"]
                r.parts["list"] = [{k: e.get(k) for k in ("part", "rows", "seconds", "worker", "patches")}
                                   for e in (state[i]["parts"][b.index] for b in prep["bands"])]
                r.report = {"scene": prep["summary"], "registration": prep["registration"],
                            "domain": prep["domain"], "vector": res["vector"]}
                finish(i, "done")
    except BaseException as exc:
        for fut in list(futures):
            fut.cancel()
        for ds in locks.values():
            for d in ds:
                d.release()
        if not isinstance(exc, BatchAborted):  # interrupted: the unfinished scenes' work folders
            for i, st in state.items():
                if results[i].status not in ("done", "failed"):
                    kept = _settle_work(st.get("journal"))
                    if kept:
                        _signals.keep(kept)
        raise
    return results


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
