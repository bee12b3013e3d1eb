"""Blend-throughput benchmark (``tiler bench blend``, ``benchmarks/blend_throughput.py``).

Measures the blender alone: the streaming engine of ``tiler run`` (strips,
rolling accumulator, numba kernels, D4 on the host) over a synthetic RGB
float32 scene generated strip by strip, with a fixed 1x1 channel-mix stand-in
model. The stand-in's own time is measured and excluded, so the figure is
"blend-only" Mpx/s of scene. Because the stand-in is pointwise and linear, the
exact blended result is known in closed form, which gives the max abs error.

Beside it, as the baseline, a plain-NumPy whole-image blend of the same
scene: full-size accumulator and weight map, ``np.rot90`` per patch for D4.
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

from tiler.blend import TTA_TRANSFORMS, d4_inverse, d4_transform, get_window
from tiler.engine import PatchStats, stream
from tiler.model import ModelInfo, Predictor, TilerModel
from tiler.plan import PatchGrid, reflect_indices

__all__ = ["BlendResult", "blend_benchmark", "numpy_baseline", "run_blend_benchmarks", "format_table",
           "tta_device_benchmark"]

#: Input channels of the synthetic scene (RGB).
CHANNELS = 3
#: Rows per chunk of the correctness check.
CHECK_ROWS = 16
#: Timed runs per configuration (the best counts: the machine is shared and
#: noisy), and the run time above which one run is enough.
REPEATS = 3
LONG_RUN_S = 10.0


@dataclass(frozen=True)
class BlendResult:
    """One row of the benchmark table."""

    method: str
    size: int
    classes: int
    tta: str
    threads: int
    seconds: float
    mpx_per_s: float
    peak_mb: float
    bytes_per_px: float
    max_abs_error: float


def _mix_matrix(classes: int) -> np.ndarray:
    rng = np.random.default_rng(classes)
    return rng.uniform(-1, 1, (classes, CHANNELS)).astype(np.float32)


def _profiles(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel 1-D profiles; the scene is their outer product (cheap to regenerate)."""
    x = np.arange(size, dtype=np.float64)
    a = np.stack([0.5 + 0.4 * np.sin(x / (17.0 + 9 * c)) for c in range(CHANNELS)]).astype(np.float32)
    b = np.stack([0.5 + 0.4 * np.cos(x / (23.0 + 7 * c)) for c in range(CHANNELS)]).astype(np.float32)
    return a, b


def _scene_window(a: np.ndarray, b: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    ri = reflect_indices(rows[0], rows[1], a.shape[1])
    ci = reflect_indices(cols[0], cols[1], b.shape[1])
    out = np.empty((a.shape[0], len(ri), len(ci)), np.float32)  # (band, row, col) C order, as a read gives
    np.multiply(a[:, ri, None], b[:, None, ci], out=out)
    return out


def _keras_mix_model(classes: int, patch_size: int, *, softmax: bool = False):
    """The channel-mix stand-in as a real Keras model: a 1x1 convolution, linear or softmax."""
    import keras


    inp = keras.Input(shape=(None, None, CHANNELS))
    conv = keras.layers.Conv2D(classes, 1, use_bias=False, activation="softmax" if softmax else None)
    net = keras.Model(inp, conv(inp))
    conv.set_weights([_mix_matrix(classes).T[None, None]])
    names = tuple(f"c{i}" for i in range(classes))
    colours = tuple(f"#{i:02X}0000" for i in range(classes))
    # Only a softmax activation changes the geometric TTA mean; a linear stand-in is declared sigmoid.
    info = ModelInfo(("red", "green", "blue"), names, colours, (0.0,) * 3, (1.0,) * 3, patch_size=patch_size,
                     depth=0, activation="softmax" if softmax else "sigmoid")
    return TilerModel(net, info)


def blend_benchmark(size: int, *, classes: int = 1, tta: str = "none", patch_size: int = 256,
                    overlap: float = 0.5, window: str = "spline", batch_size: int = 4,
                    band_width: int = 4096, strip_rows: Optional[int] = None, threads: Optional[int] = None,
                    check: bool = True, tta_device: str = "host") -> BlendResult:
    """Time the streaming blend of a ``size`` x ``size`` synthetic scene.

    Parameters
    ----------
    size : int
        Scene side in pixels.
    classes : int
        Output classes K of the stand-in model.
    tta : {"none", "flip", "d4"}
        Test-time augmentation.
    tta_device : {"host", "graph"}
        ``host``: the stand-in is a NumPy function and the rotations are the
        numba kernels, timed as blend work. ``graph``: the stand-in is a real
        Keras model (a linear 1x1 convolution) wrapped by ``tiler run``'s
        graph TTA, so the rotations run inside the model (on the accelerator
        where there is one) and count as model time, like the network.
    patch_size, overlap, window, batch_size
        As for ``tiler run``.
    band_width : int
        Column band width (bounds memory for wide scenes).
    strip_rows : int, optional
        Scene rows per strip; default one stride (the smallest strip: least memory).
    threads : int, optional
        numba threads (default: all).
    check : bool
        Compare the output with the closed-form result (untimed).

    Returns
    -------
    BlendResult
        Blend-only throughput (stand-in model and scene generation excluded),
        peak traced memory of the run (tracemalloc: NumPy buffers of the
        engine), and max abs error.
    """
    import numba

    numba.set_num_threads(threads or numba.config.NUMBA_NUM_THREADS)
    used_threads = numba.get_num_threads()
    mix = _mix_matrix(classes)
    a, b = _profiles(size)

    def network(batch: np.ndarray) -> np.ndarray:
        return np.einsum("kc,ncij->nkij", mix, batch, optimize=False, order="C")  # like a framework's output

    if tta_device == "graph":
        predictor = Predictor(_keras_mix_model(classes, patch_size), batch_size=batch_size, tta=tta,
                              tta_device="graph")
    else:
        predictor = Predictor.from_network(network, classes, batch_size=batch_size, tta=tta)
    win = get_window(window, patch_size)
    errors = [0.0]
    out_buf: dict = {}

    def read(rows, cols):
        data = _scene_window(a, b, rows, cols)
        return data, np.ones(data.shape[1:], bool)

    def run(grid: PatchGrid, stats: PatchStats, verify: bool) -> None:
        # Reads in turn, not prefetched: generating the synthetic scene in a
        # background thread would compete with the blend for memory bandwidth,
        # and the read is not what is measured.
        for block in stream(read, grid, predictor, win, strip_rows=strip_rows or grid.stride,
                            band_width=band_width, stats=stats, prefetch=False):
            (e0, e1), (c0, c1) = block.rows, block.cols
            shape = (classes, e1 - e0, c1 - c0)
            buf = out_buf.get(shape)
            if buf is None:
                buf = out_buf[shape] = np.empty(shape, np.float32)
            block.values(out=buf)  # the fused crop-and-mask, timed as blend work
            if verify:  # untimed, in small chunks so that it adds nothing to the memory peak
                for r0 in range(e0, e1, CHECK_ROWS):
                    r1 = min(e1, r0 + CHECK_ROWS)
                    expected = np.einsum("kc,cij->kij", mix.astype(np.float64),
                                         _scene_window(a, b, (r0, r1), (c0, c1)).astype(np.float64))
                    errors[0] = max(errors[0], float(np.abs(buf[:, r0 - e0:r1 - e0] - expected).max()))

    # Warm the JIT (every kernel of this configuration) outside the measurement.
    run(PatchGrid.from_overlap(patch_size, patch_size, patch_size=patch_size, overlap=overlap),
        PatchStats(), False)
    predictor.network_seconds = 0.0
    out_buf.clear()

    grid = PatchGrid.from_overlap(size, size, patch_size=patch_size, overlap=overlap)
    # Timed runs, untraced (tracemalloc's bookkeeping slows every allocation):
    # the best of up to REPEATS, fewer when one run is long. Blend-only:
    # everything the engine did but generating the scene (read) and the
    # stand-in network.
    seconds = float("inf")
    for _ in range(REPEATS):
        stats = PatchStats()
        predictor.network_seconds = 0.0
        run(grid, stats, False)
        seconds = min(seconds, stats.seconds["blend"] + stats.seconds["predict"] - predictor.network_seconds)
        if stats.seconds["blend"] + stats.seconds["predict"] > LONG_RUN_S:
            break
    # Second run, traced: the memory peak and (untimed) the correctness check.
    tracemalloc.start()
    run(grid, PatchStats(), check)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    method = "tiler (streamed, D4 in graph)" if tta_device == "graph" and tta != "none" else "tiler (numba, streamed)"
    return BlendResult(method, size, classes, tta, used_threads, seconds,
                       size * size / 1e6 / seconds, peak / 2**20, peak / (size * size), errors[0])


def numpy_baseline(size: int, *, classes: int = 1, tta: str = "none", patch_size: int = 256,
                   overlap: float = 0.5, window: str = "spline", check: bool = True) -> BlendResult:
    """The plain-NumPy whole-image blend, timed the same way (stand-in model excluded).

    Full-size float32 accumulator and weight map over the reflect-padded
    scene; each patch (and each of its D4 variants, made with ``np.rot90``)
    is predicted by the stand-in, un-rotated, averaged, window-weighted and
    added; the result is divided by the weight map and cropped.
    """
    mix = _mix_matrix(classes)
    a, b = _profiles(size)
    grid = PatchGrid.from_overlap(size, size, patch_size=patch_size, overlap=overlap)
    p = patch_size
    win = get_window(window, p)
    ts = TTA_TRANSFORMS[tta]
    rows, cols = grid.rows.origins(), grid.cols.origins()
    r0, c0 = int(rows[0]), int(cols[0])
    image = _scene_window(a, b, (r0, int(rows[-1]) + p), (c0, int(cols[-1]) + p))  # padded scene

    def blend() -> tuple[np.ndarray, float]:
        net = 0.0
        acc = np.zeros((classes,) + image.shape[1:], np.float32)
        wsum = np.zeros(image.shape[1:], np.float32)
        for r in rows - r0:
            for c in cols - c0:
                x = image[:, r:r + p, c:c + p]
                pred = np.zeros((classes, p, p), np.float32)
                for t in ts:
                    xt = np.ascontiguousarray(d4_transform(x, t))
                    tn = time.perf_counter()
                    yt = np.einsum("kc,cij->kij", mix, xt, optimize=False)
                    net += time.perf_counter() - tn
                    pred += d4_inverse(yt, t)
                pred /= len(ts)
                acc[:, r:r + p, c:c + p] += pred * win
                wsum[r:r + p, c:c + p] += win
        return acc[:, -r0:-r0 + size, -c0:-c0 + size] / wsum[-r0:-r0 + size, -c0:-c0 + size], net

    # Timed untraced (best of up to REPEATS), then traced for the memory peak, as for tiler's engine.
    seconds = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        _, net = blend()
        total = time.perf_counter() - t0
        seconds = min(seconds, total - net)
        if total > LONG_RUN_S:
            break
    tracemalloc.start()
    out, _ = blend()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    err = 0.0
    if check:
        expected = np.einsum("kc,cij->kij", mix.astype(np.float64), _scene_window(a, b, (0, size), (0, size)))
        err = float(np.abs(out - expected).max())
    return BlendResult("numpy whole-image baseline", size, classes, tta, 1, seconds,
                       size * size / 1e6 / seconds, peak / 2**20, peak / (size * size), err)


def run_blend_benchmarks(sizes: Iterable[int] = (2048, 4096), classes: Iterable[int] = (1, 6),
                         ttas: Iterable[str] = ("none", "d4"), threads: Iterable[int] = (1, 0), *,
                         baseline: bool = True, large: Optional[int] = 16384, graph: bool = True,
                         **kwargs) -> list[BlendResult]:
    """The benchmark grid: every size x K x TTA x thread count, then the baselines.

    ``threads`` 0 means all threads. ``graph`` adds single-thread rows with the
    TTA rotations inside a Keras stand-in model (``tta_device="graph"``).
    ``large`` adds single-thread K=1 rows at that size (no TTA and d4) to show
    memory does not grow with the scene.
    """
    rows = []
    for size in sizes:
        for k in classes:
            for tta in ttas:
                for th in threads:
                    rows.append(blend_benchmark(size, classes=k, tta=tta, threads=th or None, **kwargs))
    if graph:
        for size in sizes:
            for k in classes:
                for tta in ttas:
                    if tta != "none":
                        rows.append(blend_benchmark(size, classes=k, tta=tta, threads=1, tta_device="graph",
                                                    **kwargs))
    if large:
        for tta in ttas:
            rows.append(blend_benchmark(large, classes=1, tta=tta, threads=1, **kwargs))
    if baseline:
        base_kwargs = {k: v for k, v in kwargs.items() if k in ("patch_size", "overlap", "window")}
        for size in sizes:
            for k in classes:
                for tta in ttas:
                    rows.append(numpy_baseline(size, classes=k, tta=tta, **base_kwargs))
    return rows


def format_table(rows: list[BlendResult]) -> str:
    """Render benchmark rows, with the speed-up over the matching NumPy baseline."""
    base = {(r.size, r.classes, r.tta): r.mpx_per_s for r in rows if r.method.startswith("numpy")}
    head = (f"{'method':<29} {'scene':>11} {'K':>2} {'tta':>4} {'thr':>3} {'Mpx/s':>8} "
            f"{'x numpy':>8} {'peak MB':>8} {'B/px':>7} {'max abs err':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.mpx_per_s / base[(r.size, r.classes, r.tta)] if (r.size, r.classes, r.tta) in base else None
        lines.append(f"{r.method:<29} {f'{r.size}x{r.size}':>11} {r.classes:>2} {r.tta:>4} {r.threads:>3} "
                     f"{r.mpx_per_s:8.1f} {('%7.1fx' % ratio) if ratio else '      -':>8} {r.peak_mb:8.1f} "
                     f"{r.bytes_per_px:7.2f} {r.max_abs_error:11.2e}")
    return "\n".join(lines)


def tta_device_benchmark(*, patches: int = 32, patch_size: int = 256, classes: int = 6,
                         repeats: int = 3) -> list[tuple[str, float]]:
    """Patches per second of D4 TTA with rotations in the Keras graph vs on the host.

    Uses a real Keras model (a 1x1 convolution, the channel-mix stand-in) so
    that the graph path runs its rotations inside the compiled model.

    Returns
    -------
    list of (str, float)
        ``(device, patches per second)`` for "graph" and "host", best of ``repeats``.
    """
    tm = _keras_mix_model(classes, patch_size, softmax=True)
    batch = np.random.default_rng(0).random((patches, CHANNELS, patch_size, patch_size), dtype=np.float32)
    results = []
    for device in ("graph", "host"):
        pred = Predictor(tm, batch_size=patches, tta="d4", tta_device=device)
        pred(batch)  # compile
        best = min(_timed(pred, batch) for _ in range(repeats))
        results.append((device, patches / best))
    return results


def _timed(fn, arg) -> float:
    t = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t
