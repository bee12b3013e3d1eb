"""A training run's epochs and its checkpoint: validation, the best model, early stopping, resume after a crash."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from typing import Any, Optional

import numpy as np

from tiler.destination import Destination
from tiler.errors import DatasetError
from tiler.training._config import TrainConfig

__all__ = ["checkpoint_folder", "Epochs", "Checkpoint"]

log = logging.getLogger(__name__)


def checkpoint_folder(out: str) -> str:
    """The work folder of a training run's per-epoch checkpoint: ``.NAME.tiler-train`` beside ``out``."""
    folder, name = os.path.split(os.path.abspath(out))
    return os.path.join(folder, f".{name}.tiler-train")

class Epochs:
    """The epochs of one :func:`train`: validation, the best model, early stopping and the checkpoint.

    Parameters
    ----------
    config : TrainConfig
    checkpoint : Checkpoint
    t0 : float
        ``time.perf_counter()`` at the start of the run.
    on_epoch : callable or None
        Called with each epoch's row.
    validate : callable
        ``validate(net) -> scores`` (:func:`tiler.training.evaluate_images`'s dict).
    save : callable
        ``save(net, record)``: save ``net`` as the best model with its training record.
    record : dict
        What the training record says of the run whatever its epochs (command, config, data).
    """

    def __init__(self, config: TrainConfig, checkpoint: Checkpoint, *, t0: float, on_epoch, validate,
                 save, record: dict) -> None:
        self.config, self.checkpoint, self.t0 = config, checkpoint, t0
        self.on_epoch, self.validate, self.save, self.static = on_epoch, validate, save, record
        self.history: list[dict] = []
        self.best = {"mean_iou": -1.0, "epoch": None, "scores": None}
        self.stale = 0  # epochs since the validation last improved

    def resume(self, saved: dict) -> int:
        """Take the state of a checkpoint; return the epochs it had finished."""
        self.history, self.stale = saved["history"], saved["stale"]
        self.best.update(saved["best"])
        self.t0 -= saved["seconds"]
        return saved["epoch"]

    def _over_time(self, minutes: float) -> bool:
        return self.config.max_minutes is not None and minutes >= self.config.max_minutes

    def finished(self, done_epochs: int) -> bool:
        """Whether a resumed run had already ended (all epochs, patience or time spent)."""
        return bool(done_epochs >= self.config.epochs or (self.history and (
            self.stale >= self.config.patience or self._over_time(self.history[-1]["elapsed_minutes"]))))

    def record(self) -> dict:
        """The training record saved in the model file."""
        return {**self.static, "best_epoch": self.best["epoch"], "val_scores": self.best["scores"],
                "epochs_run": len(self.history) + 1,
                "minutes": round((time.perf_counter() - self.t0) / 60, 2)}

    def end_epoch(self, net, epoch: int, logs: dict) -> bool:
        """Validate epoch ``epoch`` (1-based); save the model if best, halve the rate when stale; checkpoint.

        Returns
        -------
        bool
            True to stop training (patience or time spent).
        """
        config = self.config
        tv = time.perf_counter()
        sc = self.validate(net)
        row = {"epoch": epoch, "loss": float(logs.get("loss", np.nan)),
               "val_mean_iou": sc["mean_iou"], "val_iou": sc["iou"], "val_pixel_accuracy": sc["pixel_accuracy"],
               "learning_rate": float(_to_numpy(net.optimizer.learning_rate)),
               "val_seconds": round(time.perf_counter() - tv, 1),
               "elapsed_minutes": round((time.perf_counter() - self.t0) / 60, 2)}
        improved = (sc["mean_iou"] or 0.0) > self.best["mean_iou"]
        if improved:
            self.best.update(mean_iou=sc["mean_iou"], epoch=epoch, scores=sc)
            self.stale = 0
            self.save(net, self.record())
        else:
            self.stale += 1
            if self.stale == max(1, config.patience // 2):
                lr = net.optimizer.learning_rate
                lr.assign(lr * 0.5)
        row["best"] = improved
        self.history.append(row)
        self.checkpoint.save(net, {"epoch": epoch, "history": self.history, "stale": self.stale,
                                   "best": self.best, "seconds": time.perf_counter() - self.t0})
        if self.on_epoch is not None:
            self.on_epoch(row)
        return self.stale >= config.patience or self._over_time((time.perf_counter() - self.t0) / 60)


def _to_numpy(x):
    import keras

    return keras.ops.convert_to_numpy(x)


class Checkpoint:
    """The state of a training run after its last finished epoch, in a work folder beside the model.

    ``last.keras`` (the network with its optimizer state, so Adam's moments
    and the learning rate go on where they were) and ``state.json`` (epoch,
    history, early-stopping state, elapsed seconds, and what the run is: its
    config, data and start), each written to a temporary name and renamed.
    """

    def __init__(self, out: str, identity: dict) -> None:
        self.folder = checkpoint_folder(out)
        self.identity = json.loads(json.dumps(identity, default=str))
        #: The best model so far (``best.keras``): the model file is written from it when the run ends, so
        #: that an interrupted run leaves no model file, only this folder to resume from.
        self._best = Destination(os.path.join(self.folder, "best.keras"), overwrite=True,
                                 intermediate=True)

    @property
    def best(self) -> Destination:
        """The destination of the best model so far (its folder created)."""
        os.makedirs(self.folder, exist_ok=True)
        return self._best

    def save(self, net, state: dict) -> None:
        os.makedirs(self.folder, exist_ok=True)
        last = Destination(os.path.join(self.folder, "last.keras"), overwrite=True, intermediate=True)
        with last.writing() as tmp:  # an interrupted save leaves no temporary file
            net.save(tmp)
        Destination(os.path.join(self.folder, "state.json"), overwrite=True, intermediate=True).write_text(
            json.dumps({"identity": self.identity, **state}, default=str))

    def load(self, keras) -> Optional[tuple[Any, dict]]:
        """The network and state to resume from, or None (no checkpoint: start afresh).

        Raises
        ------
        DatasetError
            If the checkpoint is of another run (config, data or start differ).
        """
        try:
            with open(os.path.join(self.folder, "state.json"), encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        if state.get("identity") != self.identity:
            raise DatasetError(f"the checkpoint in {self.folder} is of another training run (other data or "
                               f"options); remove it (rm -r '{self.folder}') or run with the options it had")

        net = keras.saving.load_model(os.path.join(self.folder, "last.keras"), compile=True)
        return net, state

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
