"""Blend-only throughput of tiler's streaming numba blender against a plain-NumPy baseline.

Prints one table: tiler's engine (strips, rolling accumulator, numba kernels,
D4 on the host) and, in the same run, a plain-NumPy whole-image blend (full
size accumulator and weight map, np.rot90 per patch), for scenes of 2048² and
4096² (and 16384² single-thread K=1 to show memory does not grow), RGB float32
in, K = 1 and 6 out, patch 256, overlap 0.5, spline window, TTA none and d4,
one thread and all threads. A fixed 1x1 channel-mix stand-in model replaces
the network; its time is measured and excluded. Strips are one stride high
(the least memory). D4 rows come twice: rotations on the host (numba kernels,
timed as blend work) and, single-threaded, rotations inside a Keras stand-in
model (``tiler run``'s default ``--tta-device graph``: they run with the model,
on the accelerator where there is one, and count as model time). Then a second
table compares the two D4 paths with the network time included. Each
configuration is timed untraced, as the best of up to 3 runs (one when a run
takes over 10 s), then run once more under tracemalloc for the memory peak and
the max abs error.

Usage::

    python benchmarks/blend_throughput.py [--sizes 2048 4096] [--large 16384] [--no-baseline]

The same table comes from ``tiler bench blend``.
"""

import argparse

from _timing import stamp  # benchmarks/_timing.py

from tiler.bench import format_table, run_blend_benchmarks, tta_device_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--classes", type=int, nargs="+", default=[1, 6])
    ap.add_argument("--tta", nargs="+", default=["none", "d4"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="0 = all threads")
    ap.add_argument("--large", type=int, default=16384)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    print(stamp(), flush=True)
    rows = run_blend_benchmarks(args.sizes, args.classes, args.tta, args.threads,
                                baseline=not args.no_baseline, large=args.large or None)
    print("patch 256, overlap 0.5, spline window; blend-only Mpx/s of scene (stand-in model excluded)")
    print(format_table(rows))
    print()
    print("D4 TTA, 32 patches of 256x256x3 -> 6 classes through a Keras 1x1 conv (network time included):")
    for device, rate in tta_device_benchmark():
        print(f"  rotations {'in the Keras graph' if device == 'graph' else 'on the host (numba)':<22} "
              f"{rate:8.1f} patches/s")


if __name__ == "__main__":
    main()
