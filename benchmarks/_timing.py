"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(fn: Callable[[], object], repeat: int, *, warm: bool = True) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` (after one untimed call when ``warm``)."""
    if warm:
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def stamp() -> str:
    """One line saying when, at which commit and on what machine a benchmark ran.

    Every benchmark prints it first, so that a table copied into the docs carries it.

    Returns
    -------
    str
        ``"# 2026-12-02 21:40 UTC, commit abc1234 (+ uncommitted changes), 2 cpus
        (model name), 23.4 GB, Python 3.x, keras backend tensorflow"``.
    """
    import datetime
    import os
    import platform
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (+ uncommitted changes)"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.1f} GB"
    except (ValueError, OSError, AttributeError):
        memory = "memory unknown"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"# {now}, commit {commit}, {os.cpu_count()} cpus ({cpu}), {memory}, "
            f"Python {platform.python_version()}, keras backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}")
