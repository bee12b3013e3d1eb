"""``tiler bench``: benchmarks."""

from __future__ import annotations

import click

from tiler.cli._common import _handle_errors, _verbosity
from tiler.errors import UsageError


@click.group()
def bench() -> None:
    """Benchmarks that print a table."""


@bench.command("blend")
@click.option("--sizes", default="2048,4096", show_default=True, help="Scene sides in pixels.")
@click.option("--classes", default="1,6", show_default=True, help="Output classes K.")
@click.option("--tta", "ttas", default="none,d4", show_default=True, help="TTA modes.")
@click.option("--threads", default="1,0", show_default=True, help="numba threads (0 = all).")
@click.option("--large", type=int, default=16384, show_default=True,
              help="Also run single-thread K=1 at this size (0 to skip).")
@click.option("--patch-size", type=int, default=256, show_default=True)
@click.option("--overlap", type=float, default=0.5, show_default=True)
@click.option("--window", default="spline", show_default=True)
@click.option("--baseline/--no-baseline", default=True, show_default=True,
              help="Also time the plain-NumPy whole-image blend.")
@_verbosity
@_handle_errors
def bench_blend(sizes, classes, ttas, threads, large, patch_size, overlap, window, baseline, quiet, verbose):
    """Blend-only throughput, peak memory and max abs error (stand-in model time excluded)."""
    from tiler.bench import format_table, run_blend_benchmarks

    def ints(text: str) -> list[int]:
        try:
            return [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"expected comma-separated integers, got {text!r}") from None

    rows = run_blend_benchmarks(ints(sizes), ints(classes), [t.strip() for t in ttas.split(",")], ints(threads),
                                baseline=baseline, large=large or None, patch_size=patch_size,
                                overlap=overlap, window=window)
    click.echo(f"patch {patch_size}, overlap {overlap}, window {window}; blend-only Mpx/s of scene")
    click.echo(format_table(rows))
