"""``tiler view``: one self-contained, offline HTML page of a result."""

from __future__ import annotations

import click

from tiler.cli._common import _guard, _handle_errors, _overwrite, _require, _verbosity


@click.command()
@click.argument("mask", type=click.Path(dir_okay=False))
@click.option("--scene", type=click.Path(), default=None,
              help="The scene, shown as a quick-look under the classes: a raster on the mask's grid, or a manifest, "
                   "sensor folder or STAC item (its red, green and blue bands on the band group of the mask's grid).")
@click.option("--vector", type=click.Path(dir_okay=False), default=None, help="Polygons of the mask (--vector).")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="The run report (--report).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The HTML page (.html).")
@_overwrite
@_verbosity
@_handle_errors
def view(mask, scene, vector, report, out, overwrite, quiet, verbose):
    """Write one HTML page of MASK that opens offline from disk: the scene, the class map with an opacity slider
    and per-class toggles, the polygons with their class, area and mean probability, a legend with class areas
    and shares, and the run report. Pan and zoom; no network request."""
    named = [(mask, "mask"), (scene, "scene"), (vector, "--vector file"), (report, "--report file")]
    for p, what in named:
        if p:
            _require(p, what)
    inputs = [p for p, _ in named if p]
    with _guard({"--out": (out, (".html", ".htm"))}, inputs, overwrite) as guard:
        from tiler.view import build_page, write_page

        path = write_page(guard["--out"], build_page(mask, scene=scene, vector=vector, report=report),
                          overwrite=overwrite)
    if not quiet:
        click.echo(f"wrote {path}", err=True)
