"""``tiler vectorize``: polygons of a class map."""

from __future__ import annotations

import click

from tiler.cli._common import (
    _guard,
    _handle_errors,
    _json,
    _overwrite,
    _polygon_options,
    _Progress,
    _require,
    _vector,
    _vector_config,
    _verbosity,
    _write_json,
)


@click.command()
@click.argument("mask", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Polygon file: .gpkg, .geojson, .fgb, .parquet, or .csv (image_id,class,multipolygon_wkt).")
@click.option("--probabilities", type=click.Path(dir_okay=False), default=None,
              help="A probability GeoTIFF of the same grid (`tiler run --output probability`, float32 or uint8): "
                   "each polygon's mean_probability comes from it (else NaN).")
@_polygon_options
@_overwrite
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a JSON report here.")
@_verbosity
@_handle_errors
def vectorize(mask, out, probabilities, classes, connectivity, min_area, min_probability, simplify, overwrite, report,
              quiet, verbose):
    """Write the polygons of the class map MASK: one per connected region of a class.

    MASK is a `tiler run` class map (class names from its metadata) or any
    single-band 8/16-bit label GeoTIFF (class values as names, e.g. --classes 1,3).
    Polygons are in MASK's CRS with class, class_index, area, perimeter, pixels
    and mean_probability (from --probabilities).
    """
    _require(mask, "mask")
    if probabilities is not None:
        _require(probabilities, "probability raster")
    polygons = _vector_config(classes, connectivity, min_area, simplify, min_probability)
    inputs = [mask] + ([probabilities] if probabilities else [])
    with _guard({"--out": _vector(out), "--report": _json(report)}, inputs, overwrite) as guard:
        from tiler.vectorize import vectorize_mask

        bar = _Progress(quiet, "block", "vectorize")
        try:
            result = vectorize_mask(mask, guard["--out"], polygons=polygons, overwrite=overwrite, progress=bar,
                                    probabilities=probabilities)
        finally:
            bar.close()
        _write_json(guard["--report"], result)
    if not quiet:
        counts = ", ".join(f"{n} {c}" for n, c in result["features"].items())
        click.echo(f"wrote {result['out']} ({counts}; {result['seconds']['total']:.1f} s)", err=True)
