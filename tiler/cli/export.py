"""``tiler export``: a tiler model as ONNX, for tiler, ONNX Runtime and QGIS's Deepness plugin."""

from __future__ import annotations

import json
import os

import click

from tiler.cli._common import _guard, _handle_errors, _overwrite, _verbosity


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="The ONNX file (.onnx).")
@click.option("--mlm", type=click.Path(dir_okay=False), default=None,
              help="Also write a STAC Item describing the ONNX model with the Machine Learning Model extension "
                   "(.json): input bands and their scaling, patch size, layout, output classes. `--model ITEM.json` "
                   "runs the model it describes.")
@_overwrite
@_verbosity
@_handle_errors
def export(model, out, mlm, overwrite, quiet, verbose):
    """Write MODEL (a .keras tiler model, or a model name such as default) as an ONNX file: NCHW input of raw
    channel values' normalised form, per-class probabilities, with tiler's metadata and the Deepness QGIS plugin's
    keys."""
    from tiler.model import resolve_model_path

    name = model
    model = resolve_model_path(model, option="MODEL")  # a file, or a model name (tiler models)
    with _guard({"--out": (out, (".onnx",)), "--mlm": (mlm, (".json",)) if mlm else None}, [model],
                overwrite) as guard:
        from tiler.model import export_onnx

        result = export_onnx(model, guard["--out"], overwrite=overwrite)
        if guard["--mlm"] is not None:
            from tiler.model import mlm_item, read_info

            href = os.path.relpath(guard["--out"].path, os.path.dirname(guard["--mlm"].path))
            stem = os.path.splitext(os.path.basename(guard["--out"].path))[0]
            guard["--mlm"].write_text(json.dumps(mlm_item(read_info(guard["--out"].current), f"./{href}",
                                                          name=os.path.splitext(os.path.basename(name))[0],
                                                          item_id=stem), indent=2))
    if not quiet:
        click.echo(f"wrote {result['out']} (input {result['input']['name']} {result['input']['shape']}, output "
                   f"{result['output']['shape']}; metadata {', '.join(result['metadata'])})", err=True)
