"""``tiler tune``: search the U-Net's hyperparameters (optuna), each trial a fresh process."""

from __future__ import annotations

import shlex
import sys

import click

from tiler.cli._common import _cluster_options, _handle_errors, _require, _verbosity
from tiler.errors import UsageError


@click.command()
@click.argument("images")
@click.argument("masks", required=False)
@click.option("--val-images", required=True, help="Validation image folder(s): whole held-out images.")
@click.option("--val-masks", default=None, help="Validation mask folder(s) (not with --labels).")
@click.option("--classes", "classes_file", required=True, type=click.Path(dir_okay=False),
              help="Class scheme JSON (names, mask colours, ignored colours).")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False),
              help="Folder of the study (study.journal: run the same command again to resume), each trial's "
                   "model, best.keras, trials.json/.csv and the plots.")
@click.option("--labels", "vector_labels", type=click.Path(dir_okay=False), default=None,
              help="Polygon labels instead of masks (as tiler train).")
@click.option("--label-field", default="class", show_default=True)
@click.option("--channels", default=None, help="Model input channels (as tiler train).")
@click.option("--band-names", default=None, help="Names of the images' bands where the files do not name them.")
@click.option("--trials", type=int, default=20, show_default=True,
              help="Finished (complete or pruned) trials the study should have; a resumed search runs the rest.")
@click.option("--timeout", "timeout_minutes", type=float, default=None,
              help="Start no new trial after this many minutes.")
@_cluster_options("the trials (N at once)")
@click.option("--space", "space_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file changing the default search space (see docs/guide/training.md).")
@click.option("--pruner", default="median", show_default=True,
              help="median, hyperband, none, or threshold:X (prune a trial whose epoch score is below X).")
@click.option("--init", "init", type=click.Path(dir_okay=False), default=None,
              help="Fine-tune every trial from this tiler model (its architecture is kept: depth, filters, "
                   "initialiser, batch norm and dropout are not searched).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=15, show_default=True, help="Most epochs per trial.")
@click.option("--steps-per-epoch", type=int, default=50, show_default=True)
@click.option("--patience", type=int, default=4, show_default=True, help="Early-stopping patience per trial.")
@click.option("--val-overlap", type=float, default=0.25, show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Wall-clock budget of each trial.")
@_verbosity
@_handle_errors
def tune(images, masks, val_images, val_masks, classes_file, out_dir, vector_labels, label_field, channels,
         band_names, trials, timeout_minutes, workers, scheduler, space_file, pruner, init, seed, epochs,
         steps_per_epoch, patience, val_overlap, max_minutes, quiet, verbose):
    """Search U-Net and training hyperparameters on IMAGES and MASKS; keep the best model in --out-dir.

    Optuna's TPE sampler proposes each trial (depth, filters, initialisation,
    batch norm, dropout, learning rate, batch and patch size, loss, augmentation);
    the trial trains in a fresh process and is scored by the validation mean IoU of
    whole held-out images through the blending engine of `tiler run`; poor trials
    are pruned epoch by epoch.
    """
    from tiler.training import TrainConfig, TuneConfig, load_space
    from tiler.training import tune as run_tune

    if vector_labels is not None:
        if masks is not None or val_masks is not None:
            raise UsageError("give masks (MASKS, --val-masks) or --labels polygons, not both")
        _require(vector_labels, "label file")
    elif masks is None or val_masks is None:
        raise UsageError("give MASKS and --val-masks (label mask folders), or --labels POLYGONS")
    _require(classes_file, "class file")
    if init is not None:
        _require(init, "--init model")
    space = load_space(space_file) if space_file else None
    base = TrainConfig(epochs=epochs, steps_per_epoch=steps_per_epoch, patience=patience, val_overlap=val_overlap,
                       max_minutes=max_minutes, seed=seed)
    config = TuneConfig(trials=trials, timeout_minutes=timeout_minutes, seed=seed, pruner=pruner,
                        space=space or {}, base=base)
    report = run_tune(images, masks, out_dir, classes=classes_file, val_images=val_images, val_masks=val_masks,
                      config=config, vector_labels=vector_labels, label_field=label_field,
                      channels=channels.split(",") if channels else None,
                      band_names=band_names.split(",") if band_names else None, workers=workers,
                      scheduler=scheduler, init=init,
                      command="tiler tune " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
                      progress=None if quiet else lambda line: click.echo(line, err=True))
    if not quiet:
        states = ", ".join(f"{n} {k}" for k, n in sorted(report["trials"].items()))
        best = report["best"]
        click.echo(f"{states} in {report['minutes']:.1f} min; "
                   + (f"best: trial {best['number']}, mean IoU {best['value']:.4f}, saved {best['model']}"
                      if best else "no trial completed"), err=True)
