"""Registration cost against scene size, its accuracy on data it was not tuned on, and the estimators.

Builds Sentinel-2 scenes of growing size from the shared 18SVG bands: the 10 m
NIR band (B08, reference) and the 20 m narrow NIR band (B8A) are each tiled
n x n times by a GDAL VRT (a text file: no pixels are copied), and the 20 m
group's georeferencing is moved by a known sub-pixel shift. For each size the
script times ``tiler.registration.register_scene`` (which reads a bounded grid
of windows, so the time should not grow with the scene), checks the recovered
shift, and times reading a window of the reference grid from the 20 m group
through ``Scene.read`` with and without the registration correction (both
resampled by GDAL's warper; target: registered <= 1.5x unregistered).

A second table measures accuracy where registration was never tuned: the
shared very-high-resolution pan/MS pair (0.5 m / 1 m, ``spacenet_pan_ms``) with
20 known shifts in [-2, 2] MS pixels imposed through the georeferencing (RMS
error against the imposed shift plus the unshifted pair's own estimate), the
same pair with its west 30 % zeroed and not declared nodata, and a 120 px
Sentinel-2 patch (60 px at 20 m, 20 px at 60 m) with 10 known shifts of its
20 m bands: error, runs that failed, models chosen, windows used and rejected
by reason, seconds per registration.

A third table compares window estimators on the unshifted VHR pair (16
windows of 120 MS px): phase correlation alone (1/100 px), phase correlation
refined by ECC (tiler's), and refined by a Gauss-Newton Lucas-Kanade step
written here: the scatter of the windows' estimates and milliseconds per
window.

Usage::

    python benchmarks/registration.py [--tiles 1 4 16] [--window 2048] [--repeat 5] [--skip-scaling]

Needs ``../shared/data/sentinel2_18SVG_20160112`` and ``spacenet_pan_ms``
(relative to the project).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from _timing import median_seconds, stamp  # benchmarks/_timing.py

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project: its tests' scene builders
from tests.scenes import s2_patch, vhr_scene  # noqa: E402
from tiler.registration import register_scene
from tiler.scene import open_scene

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
S2 = DATA / "sentinel2_18SVG_20160112"
VHR = DATA / "spacenet_pan_ms"  # (tests.scenes.VHR)
#: Imposed misplacement of the 20 m group, (row, col) in 20 m pixels.
SHIFT = (0.37, -1.21)


def tile_vrt(src: Path, dst: Path, *, col0: int, cols: int, rows: int, n: int, shift=(0.0, 0.0)) -> None:
    """An n x n mosaic of the window (col0, 0, cols, rows) of ``src`` as a VRT, origin moved by ``shift`` pixels."""
    with rasterio.open(src) as ds:
        t, crs, dtype = ds.transform, ds.crs.to_wkt(), ds.dtypes[0]
    # Moving the origin by +shift pixels places every pixel +shift from where it belongs.
    x0 = t.c + (col0 + shift[1]) * t.a
    y0 = t.f + shift[0] * t.e
    gdal_type = {"uint16": "UInt16", "uint8": "Byte", "float32": "Float32"}[dtype]
    sources = []
    for i in range(n):
        for j in range(n):
            sources.append(
                f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename><SourceBand>1</SourceBand>'
                f'<SrcRect xOff="{col0}" yOff="0" xSize="{cols}" ySize="{rows}"/>'
                f'<DstRect xOff="{j * cols}" yOff="{i * rows}" xSize="{cols}" ySize="{rows}"/></SimpleSource>')
    dst.write_text(
        f'<VRTDataset rasterXSize="{cols * n}" rasterYSize="{rows * n}"><SRS>{crs.replace("<", "&lt;")}</SRS>'
        f"<GeoTransform>{x0}, {t.a}, 0, {y0}, 0, {t.e}</GeoTransform>"
        f'<VRTRasterBand dataType="{gdal_type}" band="1">{"".join(sources)}</VRTRasterBand></VRTDataset>')


def build(folder: Path, n: int) -> str:
    # 10 m column 1 and 20 m column 1 start at the same easting (the 10 m grid
    # starts 10 m east of the 20 m grid): crop both there so tiles stay aligned.
    tile_vrt(S2 / "s2_B08.jp2", folder / f"b08_{n}.vrt", col0=1, cols=1932, rows=1946, n=n)
    tile_vrt(S2 / "s2_B8A.jp2", folder / f"b8a_{n}.vrt", col0=1, cols=966, rows=973, n=n, shift=SHIFT)
    manifest = folder / f"scene_{n}.toml"
    manifest.write_text(
        'reference = "10m"\n'
        f'[groups.10m]\nfiles = ["b08_{n}.vrt"]\nbands = ["nir"]\nscale = 0.0001\nnodata = 0\n'
        f'[groups.20m]\nfiles = ["b8a_{n}.vrt"]\nbands = ["nir2"]\nscale = 0.0001\nnodata = 0\n')
    return str(manifest)



def accuracy_row(label: str, make, group: str, shifts, groups=None) -> str:
    """Register the unshifted scene and every shifted one; one table row."""
    with tempfile.TemporaryDirectory() as tmp:
        with open_scene(make(Path(tmp) / "base", (0.0, 0.0))) as sc:
            base = register_scene(sc, groups=groups).groups[group]
        found = []
        for k, shift in enumerate(shifts):
            with open_scene(make(Path(tmp) / f"s{k}", tuple(shift))) as sc:
                t = time.perf_counter()
                found.append((register_scene(sc, groups=groups).groups[group], time.perf_counter() - t))
    errors, fails, models, seconds = [], 0, {}, []
    used, rejected = [], {}
    for (g, sec), shift in zip(found, shifts):
        seconds.append(sec)
        if g.status != "ok":
            fails += 1
            continue
        models[g.model] = models.get(g.model, 0) + 1
        used.append(g.windows_used)
        for k, n in g.rejected.items():
            rejected[k] = rejected.get(k, 0) + n
        errors.append(np.subtract(g.shift_group_px, base.shift_group_px) - shift)
    rms = float(np.sqrt(np.mean(np.sum(np.square(errors), axis=1)))) if errors else float("nan")
    runs = len(shifts)
    why = ", ".join(f"{k} {n / runs:.1f}" for k, n in sorted(rejected.items(), key=lambda kv: -kv[1])) or "none"
    total = base.window_grid[0] * base.window_grid[1]
    return (f"| {label} | {rms:.3f} | {fails}/{runs} | "
            f"{', '.join(f'{k} {n}' for k, n in sorted(models.items()))} | "
            f"{np.mean(used) if used else 0:.1f} of {total} ({base.window_size} px) | {why} | "
            f"{np.median(seconds):.2f} |")


def _lucas_kanade(anchor, group, start, iterations=20):
    """Gauss-Newton least squares of ``group(x + d) ~ gain * anchor(x) + bias`` from ``start`` (the comparator)."""
    from scipy import ndimage

    n = anchor.shape[0]
    border = int(np.ceil(np.abs(start).max())) + 3
    inner = (slice(border, n - border), slice(border, n - border))
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    gy, gx = np.gradient(group)
    d = np.array(start, float)
    for _ in range(iterations):
        coords = [yy[inner] + d[0], xx[inner] + d[1]]
        moved = ndimage.map_coordinates(group, coords, order=3, mode="nearest").ravel()
        jy = ndimage.map_coordinates(gy, coords, order=1, mode="nearest").ravel()
        jx = ndimage.map_coordinates(gx, coords, order=1, mode="nearest").ravel()
        a = anchor[inner].ravel()
        design = np.stack([a, np.ones_like(a)], axis=1)
        gain_bias, *_ = np.linalg.lstsq(design, moved, rcond=None)
        residual = moved - design @ gain_bias
        step, *_ = np.linalg.lstsq(np.stack([jy, jx, -a, -np.ones_like(a)], axis=1), -residual, rcond=None)
        d += step[:2]
        if np.abs(step[:2]).max() < 1e-4:
            break
    return d


def estimator_rows() -> list[str]:
    """Window estimators on the unshifted VHR pair, 16 windows of 120 MS px."""
    from skimage.registration import phase_cross_correlation

    from tiler.registration import estimate_window

    with rasterio.open(VHR / "pan1.tif") as ds:
        pan = ds.read(1).astype(float).reshape(300, 2, 300, 2).mean(axis=(1, 3))
    with rasterio.open(VHR / "ms1.tif") as ds:
        ms = ds.read([1, 2, 3]).astype(float).mean(axis=0)
    size, origins = 120, [0, 60, 120, 180]
    taper = np.outer(np.hanning(size), np.hanning(size))
    out: dict[str, tuple[list, float]] = {}

    def record(name, fn):
        found, t = [], time.perf_counter()
        for r0 in origins:
            for c0 in origins:
                a, g = pan[r0:r0 + size, c0:c0 + size], ms[r0:r0 + size, c0:c0 + size]
                found.append(fn(a, g))
        out[name] = (found, (time.perf_counter() - t) / len(found) * 1000)

    def pc(a, g, upsample=100):
        s, _, _ = phase_cross_correlation((a - a.mean()) * taper, (g - g.mean()) * taper,
                                          upsample_factor=upsample, normalization="phase")
        return -s

    valid = np.ones((size, size), bool)
    record("phase correlation, 1/100 px", pc)
    record("phase correlation + ECC (tiler)", lambda a, g: estimate_window(a, g, valid, max_shift=30).shift)
    record("phase correlation + Lucas-Kanade (numpy)", lambda a, g: _lucas_kanade(
        (a - a.mean()) / a.std(), (g - g.mean()) / g.std(), pc(a, g, 10)))
    rows = []
    for name, (found, ms_per) in out.items():
        v = np.asarray(found)
        rows.append(f"| {name} | ({v[:, 0].mean():+.3f}, {v[:, 1].mean():+.3f}) | "
                    f"({v[:, 0].std():.3f}, {v[:, 1].std():.3f}) | {ms_per:.1f} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, nargs="+", default=[1, 4, 16],
                    help="mosaic tiles per side (1: 1932 px, 4: 7728 px, 16: 30912 px)")
    ap.add_argument("--window", type=int, default=2048, help="side of the timed read window, reference pixels")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-scaling", action="store_true", help="only the accuracy and estimator tables")
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    if not S2.exists() or not VHR.exists():
        print(f"needs the shared Sentinel-2 scene at {S2} and the VHR pair at {VHR}", file=sys.stderr)
        return 2
    if not args.skip_scaling:
        scaling_table(args)
    print("\n### Accuracy on data registration was not tuned on\n")
    print("| scene | RMS error px | failed | model chosen | windows used (size) | rejected per run | s per run |")
    print("|---|---:|---:|---|---|---|---:|")
    vhr_shifts = np.random.default_rng(12).uniform(-2, 2, (20, 2))
    print(accuracy_row("VHR pan 0.5 m / MS 1 m, 20 shifts (MS px)", lambda f, s: vhr_scene(f, s), "ms", vhr_shifts))
    print(accuracy_row("same, west 30 % zero, undeclared", lambda f, s: vhr_scene(f, s, zero_cols=90), "ms",
                       vhr_shifts))
    print(accuracy_row("Sentinel-2 patch 120/60/20 px, 10 shifts (20 m px)", lambda f, s: s2_patch(f, s), "20m",
                       np.random.default_rng(14).uniform(-1.5, 1.5, (10, 2)), groups=["20m"]))
    print("\n### Window estimators, unshifted VHR pair, 16 windows of 120 MS px\n")
    print("| estimator | mean (row, col) MS px | scatter (std) MS px | ms per window |")
    print("|---|---|---|---:|")
    for row in estimator_rows():
        print(row)
    return 0


def scaling_table(args) -> None:
    """Registration time against scene size, and the cost of a registered read."""
    print(f"imposed 20 m misplacement (row, col): {SHIFT} px; window {args.window}^2; median of {args.repeat}")
    head = (f"{'scene (10 m px)':>16} {'windows read':>12} {'estimate s':>10} {'found (row, col) 20 m px':>26} "
            f"{'error px':>8} {'unreg. read s':>13} {'reg. read s':>11} {'ratio':>6}")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory() as tmp, rasterio.Env(GDAL_CACHEMAX=64 * 2**20):
        with open_scene(build(Path(tmp), 1)) as sc:
            register_scene(sc)  # untimed: the first call imports SciPy, scikit-image and OpenCV
        for n in args.tiles:
            path = build(Path(tmp), n)
            with open_scene(path) as sc:
                side = f"{sc.width}x{sc.height}"
                t = time.perf_counter()
                reg = register_scene(sc)
                est = time.perf_counter() - t
                g = reg.groups["20m"]
                found = np.asarray(g.shift_group_px)
                err = float(np.hypot(*(found - SHIFT)))
                r0 = max(0, sc.height // 2 - args.window // 2)
                c0 = max(0, sc.width // 2 - args.window // 2)
                rows, cols = (r0, min(sc.height, r0 + args.window)), (c0, min(sc.width, c0 + args.window))
                unreg = median_seconds(lambda: sc.read(rows, cols, [2]), args.repeat, warm=False)
                reg.apply(sc)
                regd = median_seconds(lambda: sc.read(rows, cols, [2]), args.repeat, warm=False)
            print(f"{side:>16} {len(g.windows):>12} {est:>10.2f} {f'({found[0]:+.3f}, {found[1]:+.3f})':>26} "
                  f"{err:>8.3f} {unreg:>13.3f} {regd:>11.3f} {regd / unreg:>6.2f}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
