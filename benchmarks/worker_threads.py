"""Two worker processes on one machine: OpenVINO's threads per process against the cores they share.

Each process compiles the bundled model's network for the CPU (as ``tiler run`` does: ``LATENCY`` hint,
float32) and runs ``--batches`` batches of 8 patches of 192 px; the processes start together and the table
gives the patches per second of all of them together, for: one process with OpenVINO's own thread count
(every core), the reference; ``--processes`` processes with OpenVINO's own thread count each (the cores
oversubscribed); and ``--processes`` processes capped at ``cores // processes`` threads each
(``INFERENCE_NUM_THREADS``, what ``tiler run --workers N`` gives each worker through ``TILER_NUM_THREADS``),
with OpenVINO's default of pinning its threads to cores (every process pins to the same first cores) and
without (``ENABLE_CPU_PINNING`` off, what tiler sets with the cap).

Usage::

    python benchmarks/worker_threads.py [--processes 2] [--batches 40]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import numpy as np
from _timing import stamp  # benchmarks/_timing.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _worker(threads, pinning, batches, start, queue):
    import openvino as ov

    from tiler.model import DEFAULT_MODEL_PATH, load_model

    tm = load_model(DEFAULT_MODEL_PATH)
    shape = (8, 192, 192, 3)
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if pinning is not None:
        config["ENABLE_CPU_PINNING"] = pinning
    model = ov.convert_model(tm.keras_model, example_input=np.zeros(shape, np.float32))
    request = core.compile_model(model, "CPU", config).create_infer_request()
    batch = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    request.infer({0: batch})
    start.wait()
    t = time.perf_counter()
    for _ in range(batches):
        request.infer({0: batch})
    queue.put(time.perf_counter() - t)


def _run(processes: int, threads: int, batches: int, pinning=None) -> float:
    ctx = mp.get_context("spawn")
    start, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(threads, pinning, batches, start, queue)) for _ in range(processes)]
    for p in procs:
        p.start()
    seconds = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return processes * batches * 8 / max(seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    cores = os.cpu_count() or 1
    capped = max(1, cores // args.processes)
    rows = [("1 process, OpenVINO's threads", _run(1, 0, args.batches)),
            (f"{args.processes} processes, OpenVINO's threads each", _run(args.processes, 0, args.batches)),
            (f"{args.processes} processes, {capped} thread(s) each, pinned to cores (OpenVINO's default)",
             _run(args.processes, capped, args.batches)),
            (f"{args.processes} processes, {capped} thread(s) each, not pinned",
             _run(args.processes, capped, args.batches, pinning=False))]
    print(f"bundled model, batch 8 x 192 px, {args.batches} batches per process, float32; cpus={cores}")
    print()
    print("| processes and threads | patches/s (all) | vs 1 process |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / rows[0][1]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
