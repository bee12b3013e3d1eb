"""One trial of ``tiler tune``, in its own process: train with the trial's options, report each epoch.

Run as ``python -m tiler.training._trial SPEC.json`` by :func:`tiler.training.tune`
(a fresh interpreter per trial: TensorFlow/Keras keep memory from one model to
the next in one process). The spec names the study's journal file and the
trial; each epoch's validation mean IoU is reported to the study, which may
prune the trial. The outcome is written to ``spec["result"]`` (JSON, atomically)
as ``{"state": "complete"|"pruned"|"failed", "value", "reason", ...}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback

from tiler.errors import TilerError
from tiler.labels import LabelScheme
from tiler.training._config import TrainConfig
from tiler.training._study import make_pruner, open_storage

__all__ = ["main", "run_trial_process"]


def run_trial_process(spec_path: str) -> dict:
    """Run one trial in a fresh Python process and return its outcome.

    Parameters
    ----------
    spec_path : str
        The trial's spec JSON (written by :func:`tiler.training.tune`).

    Returns
    -------
    dict
        The child's result; ``{"state": "failed", "reason": ...}`` with the
        end of its stderr where it died without one (killed, out of memory).
    """

    with open(spec_path) as f:
        spec = json.load(f)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tiler.training._trial", spec_path],
                          capture_output=True, text=True, check=False)
    try:
        with open(spec["result"]) as f:
            result = json.load(f)
    except (OSError, ValueError):
        tail = (proc.stderr or "").strip().splitlines()[-3:]
        result = {"state": "failed", "reason": f"the trial process exited with code {proc.returncode} without a "
                                               f"result: {' | '.join(tail)[-400:]}"}
    result["seconds"] = round(time.perf_counter() - t, 1)
    return result


def _write(path: str, result: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, path)


def main(argv=None) -> int:
    """Entry point of the trial process (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    import optuna

    from tiler.training._train import train  # the trial process: Keras and TensorFlow from here

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=spec["study"], storage=open_storage(spec["storage"]),
                              pruner=make_pruner(spec["pruner"], spec["config"]["epochs"]))
    trial = optuna.trial.Trial(study, spec["trial_id"])
    epochs = []

    def on_epoch(row: dict) -> None:
        value = row["val_mean_iou"] or 0.0
        epochs.append(value)
        trial.report(value, row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}: validation mean IoU {value:.4f}")

    try:
        config = TrainConfig(**spec["config"])
        report = train(spec["images"], spec["masks"], spec["out"], labels=LabelScheme.from_file(spec["classes"]),
                       val_images=spec["val_images"], val_masks=spec["val_masks"],
                       vector_labels=spec["vector_labels"], label_field=spec["label_field"],
                       channels=spec["channels"], band_names=spec["band_names"], config=config,
                       on_epoch=on_epoch, command=spec["command"], init=spec.get("init"))
        result = {"state": "complete", "value": report["val_scores"]["mean_iou"],
                  "iou": report["val_scores"]["iou"], "best_epoch": report["best_epoch"],
                  "epochs_run": report["epochs_run"]}
    except optuna.TrialPruned as exc:
        result = {"state": "pruned", "reason": str(exc), "epochs_run": len(epochs)}
    except (TilerError, ValueError) as exc:
        result = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}", "epochs_run": len(epochs)}
    except Exception as exc:  # noqa: BLE001 - any failure of one trial is recorded, the search goes on
        result = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-2000:], "epochs_run": len(epochs)}
    result["intermediate"] = epochs
    _write(spec["result"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
