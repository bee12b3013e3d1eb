"""Spectral index throughput: tiler's numba kernels against plain NumPy, one core.

Each index of ``tiler.indices.INDICES`` is computed on a 4096 x 4096 float32
strip of random reflectances (5 % of the pixels nodata) by

- ``tiler (numba)``: ``tiler.indices.compute_index``, one fused pass per pixel
  (divide, nodata and near-zero-denominator mask, clip), with 1 thread and
  with all threads;
- ``numpy``: the same maths as whole-array NumPy expressions (temporaries per
  operation), single-threaded by nature.

Prints Mpx/s (median of ``--repeat`` runs) and the largest difference between
the two, relative to max(1, |value|) (NumPy computes in float32, tiler per
pixel in float64, which differ most near a zero denominator). Target: each index >= 100 Mpx/s on one core.

Usage::

    python benchmarks/indices.py [--size 4096] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np
from _timing import median_seconds, stamp  # benchmarks/_timing.py

from tiler.indices import DENOMINATOR_EPSILON, INDICES, compute_index


def numpy_index(name, bands, valid):
    """Whole-array NumPy version of each formula (the alternative measured)."""
    b = dict(zip(INDICES[name].bands, bands))
    p = INDICES[name].params
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "savi":
            num, den = (1 + p["L"]) * (b["nir"] - b["red"]), b["nir"] + b["red"] + p["L"]
        elif name == "evi":
            num = p["g"] * (b["nir"] - b["red"])
            den = b["nir"] + p["C1"] * b["red"] - p["C2"] * b["blue"] + p["L"]
        elif name == "ccci":
            num = (b["nir"] - b["rededge1"]) / (b["nir"] + b["rededge1"])
            den = (b["nir"] - b["red"]) / (b["nir"] + b["red"])
        else:
            x, y = bands
            num, den = x - y, x + y
        out = num / den
    out[~valid | (np.abs(den) <= DENOMINATOR_EPSILON)] = np.nan
    if INDICES[name].bounds is not None:
        np.clip(out, *INDICES[name].bounds, out=out)
    return out.astype(np.float32, copy=False)



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    print(stamp(), flush=True)
    rng = np.random.default_rng(0)
    shape = (args.size, args.size)
    pool = [rng.uniform(0.0, 0.6, shape).astype(np.float32) for _ in range(3)]
    valid = rng.random(shape) > 0.05
    mpx = args.size * args.size / 1e6
    cores = numba.config.NUMBA_NUM_THREADS
    print(f"{args.size}x{args.size} float32, median of {args.repeat}; numba threads available: {cores}")
    head = (f"{'index':<6} {'inputs':<20} {'numba 1 thr':>11} {f'numba {cores} thr':>12} {'numpy':>8} "
            f"{'numba/numpy':>11} {'max rel diff':>12}")
    print(head + "\n" + "-" * len(head) + "   (Mpx/s)")
    for name, idx in INDICES.items():
        bands = pool[:len(idx.bands)]
        numba.set_num_threads(1)
        one = mpx / median_seconds(lambda: compute_index(idx, *bands, valid=valid), args.repeat)
        numba.set_num_threads(cores)
        many = mpx / median_seconds(lambda: compute_index(idx, *bands, valid=valid), args.repeat)
        ref = mpx / median_seconds(lambda: numpy_index(name, bands, valid), args.repeat)
        a, b = compute_index(idx, *bands, valid=valid), numpy_index(name, bands, valid)
        both = np.isfinite(a) & np.isfinite(b)
        rel = np.abs(a[both] - b[both]) / np.maximum(1.0, np.abs(b[both]))
        diff = float(rel.max()) if both.any() else 0.0
        print(f"{name:<6} {','.join(idx.bands):<20} {one:>11.0f} {many:>12.0f} {ref:>8.0f} {one / ref:>10.1f}x "
              f"{diff:>12.2e}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
