"""``tiler models``: the models available by name."""

from __future__ import annotations

import json

import click

from tiler.cli._common import _handle_errors, _verbosity


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_verbosity
@_handle_errors
def models(as_json, quiet, verbose):
    """List the models available by name (`--model NAME`): the bundled default and those installed packages
    register (entry-point group `tiler.models`), with channels, classes, pixel size, licence and source."""
    from tiler.model import available_models, read_info

    rows = []
    for m in available_models().values():
        info = read_info(m.path)  # a package's ONNX file: its provider's description
        domain = info.input_domain
        rows.append({"name": m.name, "path": m.path, "description": m.description,
                     "channels": list(info.channels), "classes": list(info.classes),
                     "pixel_size_m": domain.pixel_size if domain is not None else None,
                     "format": "onnx" if info.is_onnx else "keras", "licence": m.licence, "source": m.source})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not any(r["name"].startswith("clouds-") for r in rows) and not quiet:
        click.echo("note: cloud and cloud-shadow masks for Sentinel-2 and Landsat (clouds-*) are available with "
                   "pip install \"satellite-tiler[clouds]\"", err=True)
    for r in rows:
        size = f"{r['pixel_size_m']:g} m" if r["pixel_size_m"] else "pixel size unknown"
        click.echo(f"{r['name']}: {r['description']}\n"
                   f"  channels {', '.join(r['channels'])}; classes {', '.join(r['classes'])}; {size}; "
                   f"{r['format']}\n  licence {r['licence']}\n  source  {r['source']}\n  file    {r['path']}")
