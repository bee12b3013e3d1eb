"""An existing dask cluster, tested as deployed (issue 39): ``dask scheduler`` and ``dask worker`` processes
started here on free local ports, ``tiler`` run as a user runs it, in a subprocess.

Oracles: the outputs of the same command without a cluster (byte for byte); the exit code, the last line
and the batch report's per-scene statuses after a worker or the scheduler is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from tests.conftest import smooth_image, write_tif

DASK = str(Path(sys.executable).with_name("dask"))
pytestmark = pytest.mark.skipif(not os.path.exists(DASK), reason="the dask command is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A scheduler and workers, each a real process; stopped (killed) at the end of the test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port: int | None = None  # taken when the scheduler first starts, kept for a restart
        self.procs: list[subprocess.Popen] = []
        self.scheduler: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        assert self.port is not None, "start the scheduler first"
        return f"tcp://127.0.0.1:{self.port}"

    def _spawn(self, *args: str) -> subprocess.Popen:
        with open(self.folder / f"dask-{len(self.procs)}.log", "w") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _log(self, proc: subprocess.Popen) -> str:
        return (self.folder / f"dask-{self.procs.index(proc)}.log").read_text()

    def start_scheduler(self) -> None:
        """Start a scheduler and wait until it listens. The first start takes a free port, and another one where
        a process took that port between the probe and the scheduler's bind (the tiler commands run before it
        open ephemeral ports of their own); a restart keeps the port, so the address the tests hold stays valid.
        """
        first = self.port is None
        for _ in range(5 if first else 1):
            if first:
                self.port = _free_port()
            self.scheduler = self._spawn("scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                         "--dashboard-address", ":0", "--no-show")
            deadline = time.monotonic() + 120
            while self.scheduler.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the dask scheduler did not start:\n{self._log(self.scheduler)}")
                    time.sleep(0.2)
        raise AssertionError(f"the dask scheduler exited at start:\n{self._log(self.scheduler)}")

    def start_worker(self, n: int = 1) -> subprocess.Popen:
        return self._spawn("worker", self.address, "--nworkers", str(n), "--nthreads", "1",
                           "--dashboard-address", ":0", "--memory-limit", "4GiB")

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout="30s") as client:
            client.wait_for_workers(n, timeout=120)

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


@pytest.fixture
def dask_cluster(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


def _tiler(*args, wait: bool = True, **kwargs):
    cmd = [sys.executable, "-m", "tiler.cli", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)


def _scenes(folder: Path, n: int, size: int = 256) -> str:
    folder.mkdir()
    for i in range(n):
        write_tif(folder / f"s{i}.tif", smooth_image(3, size, size, seed=i))
    return str(folder / "*.tif")


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tif"))}


def test_a_batch_and_a_run_in_parts_on_an_external_cluster_equal_one_process(tmp_path, dask_cluster, tiny_model):
    pattern = _scenes(tmp_path / "in", 3)
    big = write_tif(tmp_path / "big.tif", smooth_image(3, 300, 260, seed=9))
    r = _tiler("batch", pattern, "--out-dir", tmp_path / "one", "--model", tiny_model)
    assert r.returncode == 0, r.stderr
    r = _tiler("run", big, "-o", tmp_path / "one.tif", "--model", tiny_model, "--parts", "1", "--strip-rows", "64")
    assert r.returncode == 0, r.stderr
    dask_cluster.start_scheduler()
    dask_cluster.start_worker(2)
    r = _tiler("batch", pattern, "--out-dir", tmp_path / "cluster", "--model", tiny_model, "--scheduler",
               dask_cluster.address)
    assert r.returncode == 0, r.stderr
    assert "worker(s)" in r.stderr  # the scheduler's workers, said at once
    assert _bytes(tmp_path / "cluster") == _bytes(tmp_path / "one")
    r = _tiler("run", big, "-o", tmp_path / "parts.tif", "--model", tiny_model, "--parts", "3", "--strip-rows", "64",
               "--scheduler", dask_cluster.address)
    assert r.returncode == 0, r.stderr
    assert "3 parts" in r.stderr
    import rasterio

    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "parts.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())


def _start_batch(tmp_path, pattern, model, cluster, report):
    proc = _tiler("batch", pattern, "--out-dir", tmp_path / "out", "--model", model, "--scheduler", cluster.address,
                  "--report", report, wait=False)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "out").glob("s*.tif")):  # the first mask is written: the batch is under way
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the batch never wrote a mask"
        time.sleep(0.1)
    return proc


def test_a_worker_killed_mid_batch_changes_nothing(tmp_path, dask_cluster, tiny_model):
    pattern = _scenes(tmp_path / "in", 8)
    r = _tiler("batch", pattern, "--out-dir", tmp_path / "one", "--model", tiny_model)
    assert r.returncode == 0, r.stderr
    dask_cluster.start_scheduler()
    nanny = dask_cluster.start_worker(1)
    dask_cluster.wait_for_workers(1)
    proc = _start_batch(tmp_path, pattern, tiny_model, dask_cluster, tmp_path / "r.json")
    workers = [c for c in psutil.Process(nanny.pid).children(recursive=True)
               if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]
    assert workers, "no worker process under the nanny"
    workers[-1].send_signal(signal.SIGKILL)  # the nanny restarts it; dask reruns its task
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert _bytes(tmp_path / "out") == _bytes(tmp_path / "one")


def test_a_lost_scheduler_is_said_once_and_the_same_command_resumes(tmp_path, dask_cluster, tiny_model):
    """Before: exit 3 and one "opening the scene failed: FutureCancelledError ..." line per unfinished scene."""
    pattern = _scenes(tmp_path / "in", 8, size=320)
    dask_cluster.start_scheduler()
    dask_cluster.start_worker(1)
    dask_cluster.wait_for_workers(1)
    proc = _start_batch(tmp_path, pattern, tiny_model, dask_cluster, tmp_path / "r.json")
    dask_cluster.scheduler.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Error: lost the dask scheduler at {dask_cluster.address};"), err
    assert "run the same command to resume" in last and "opening the scene" not in err
    report = json.loads((tmp_path / "r.json").read_text())
    statuses = {s["scene"]: s["status"] for s in report["scenes"]}
    done = {k for k, v in statuses.items() if v == "done"}
    assert set(statuses.values()) <= {"done", "not finished"} and "not finished" in statuses.values(), statuses
    assert {Path(p).stem for p in done} == {p.stem for p in (tmp_path / "out").glob("s*.tif")}
    # A new scheduler and workers at the same address: the same command finishes only what was missing.
    dask_cluster.start_scheduler()
    dask_cluster.start_worker(1)
    r = _tiler("batch", pattern, "--out-dir", tmp_path / "out", "--model", tiny_model, "--scheduler",
               dask_cluster.address, "--report", tmp_path / "r2.json")
    assert r.returncode == 0, r.stderr
    again = {s["scene"]: s["status"] for s in json.loads((tmp_path / "r2.json").read_text())["scenes"]}
    assert {k for k, v in again.items() if v == "skipped"} == done
    assert {k for k, v in again.items() if v == "done"} == set(statuses) - done
    assert not [f for f in os.listdir(tmp_path / "out") if f.startswith(".")]
    r = _tiler("batch", pattern, "--out-dir", tmp_path / "one", "--model", tiny_model)
    assert _bytes(tmp_path / "out") == _bytes(tmp_path / "one")


def test_a_scheduler_without_workers_is_said_and_given_up_on(tmp_path, dask_cluster, tiny_model):
    """Before: 618 s of silence."""
    pattern = _scenes(tmp_path / "in", 1)
    dask_cluster.start_scheduler()
    t = time.monotonic()
    r = _tiler("batch", pattern, "--out-dir", tmp_path / "out", "--model", tiny_model, "--scheduler",
               dask_cluster.address, "--worker-timeout", "3")
    assert r.returncode == 1, r.stderr
    assert f"dask scheduler {dask_cluster.address}: 0 worker(s)" in r.stderr
    assert "waiting for workers to join" in r.stderr
    assert f"no dask worker joined the scheduler at {dask_cluster.address} in 3 s" in r.stderr
    assert f"dask worker {dask_cluster.address}" in r.stderr.strip().splitlines()[-1]
    assert time.monotonic() - t < 120
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_run_in_parts_that_loses_its_scheduler_keeps_its_parts_and_resumes(tmp_path, dask_cluster, tiny_model):
    big = write_tif(tmp_path / "big.tif", smooth_image(3, 1024, 512, seed=4))
    r = _tiler("run", big, "-o", tmp_path / "one.tif", "--model", tiny_model, "--parts", "1", "--strip-rows", "64")
    assert r.returncode == 0, r.stderr
    dask_cluster.start_scheduler()
    dask_cluster.start_worker(1)
    dask_cluster.wait_for_workers(1)
    out = tmp_path / "out"
    out.mkdir()
    proc = _tiler("run", big, "-o", out / "m.tif", "--model", tiny_model, "--parts", "16", "--strip-rows", "64",
                  "--scheduler", dask_cluster.address, wait=False)
    journal = out / ".m.tif.tiler-parts" / "journal.jsonl"
    deadline = time.monotonic() + 300
    while not (journal.exists() and '"kind": "part"' in journal.read_text()):  # a first part is journalled
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no part was ever finished"
        time.sleep(0.05)
    dask_cluster.scheduler.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"Error: lost the dask scheduler at {dask_cluster.address}; 0 scene(s) done, 1 "
                           "unfinished"), err
    assert not (out / "m.tif").exists()
    dask_cluster.start_scheduler()
    dask_cluster.start_worker(1)
    r = _tiler("run", big, "-o", out / "m.tif", "--model", tiny_model, "--parts", "16", "--strip-rows", "64",
               "--scheduler", dask_cluster.address)
    assert r.returncode == 0, r.stderr
    reused = int(r.stderr.split(" parts (")[1].split(" from an interrupted run")[0])
    assert reused >= 1, r.stderr
    import rasterio

    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(out / "m.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert sorted(os.listdir(out)) == ["m.tif"]
