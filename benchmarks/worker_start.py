"""How soon a `tiler batch` worker predicts: seconds from its start to its first scene's first network batch.

Issue 23's target: a worker's first scene starts predicting within 2 s of the
worker starting. Each row starts the local cluster `tiler batch --workers N`
starts (:func:`tiler.distributed.cluster`, the same environment and memory
limits), then runs :func:`tiler.distributed.batch` on real Dubai tile-7 images
(or copies of the bundled sample scene without the shared data) with the
bundled model, its OpenVINO network already converted and cached. A worker
plugin (added before any task, importing nothing of tiler) records when the
engine logs its first predicted batch (``tiler.engine``'s debug record
"first batch"), and when the worker process was created.

Columns, per worker, seconds:

- ``process -> first batch``: from the worker's process creation (Python and
  dask.distributed starting included) to its first predicted batch;
- ``batch call -> first batch``: from calling ``batch`` with the cluster up
  (every worker registered, idle) to it: the worker's own start-up of tiler
  (imports, the model's metadata and network, the scene's opening and checks)
  and one batch; the driver's work before it submits (expanding the inputs,
  resolving the run once, the fingerprints) included.

    python benchmarks/worker_start.py [--workers 1 2] [--scenes 4]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _timing import stamp  # benchmarks/_timing.py
from distributed.diagnostics.plugin import WorkerPlugin

ROOT = Path(__file__).resolve().parents[1]
TILE7 = ROOT.parent / "shared" / "data" / "dubai_aerial" / "tile_7" / "images"


class FirstBatch(WorkerPlugin):
    """Keeps the times of the engine's "first batch" records on the worker (``dask_worker.tiler_first``)."""

    name = "tiler-first-batch"

    def setup(self, worker) -> None:
        import logging

        worker.tiler_first = []

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("first batch"):
                    worker.tiler_first.append(record.created)

        logger = logging.getLogger("tiler.engine")
        logger.setLevel(logging.DEBUG)
        logger.addHandler(Handler(logging.DEBUG))


def _worker_times(dask_worker) -> dict:
    import psutil

    return {"created": psutil.Process().create_time(), "first": list(dask_worker.tiler_first)}


def scenes(folder: Path, n: int) -> list[str]:
    """``n`` real tile-7 images (or copies of the bundled sample scene without the shared data)."""
    found = sorted(glob.glob(str(TILE7 / "*.jpg")))[:n]
    if len(found) == n:
        return found
    out = []
    for k in range(n):
        path = folder / f"sample_{k}.tif"
        shutil.copyfile(ROOT / "examples" / "dubai_sample.tif", path)
        out.append(str(path))
    return out


def one(workers: int, inputs: list[str], out_dir: Path) -> list[dict]:
    from tiler.distributed import batch, cluster

    shutil.rmtree(out_dir, ignore_errors=True)
    with cluster(workers) as client:
        client.wait_for_workers(workers)
        client.register_plugin(FirstBatch())
        called = time.time()
        report = batch(inputs, out_dir, client=client)
        times = client.run(_worker_times)
    if report.failed:
        raise SystemExit(f"{len(report.failed)} scene(s) failed: {report.failed[0]['error']}")
    return [{"worker": addr, "created": t["created"], "called": called,
             "first": min(t["first"]) if t["first"] else None} for addr, t in sorted(times.items())]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--scenes", type=int, default=4)
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = scenes(tmp, args.scenes)
        os.environ.setdefault("TILER_CACHE_DIR", str(tmp / "cache"))
        # Convert and cache the network once (a first run on a machine), outside the rows.
        from tiler.pipeline import run_scene

        run_scene(inputs[0], str(tmp / "warm.tif"), overwrite=True, force=True)
        print(f"{len(inputs)} scenes ({Path(inputs[0]).parent}); the bundled model, its network cached")
        print("| workers | worker | process -> first batch s | batch call -> first batch s |")
        print("|---:|---|---:|---:|")
        for n in args.workers:
            for r in one(n, inputs, tmp / f"out{n}"):
                if r["first"] is None:
                    print(f"| {n} | {r['worker']} | (predicted nothing) | |")
                    continue
                print(f"| {n} | {r['worker']} | {r['first'] - r['created']:.2f} | {r['first'] - r['called']:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
