"""Training (tiler.training): the sampler, a training run on this backend, resume after a crash; polygon labels."""

import os

import keras
import numpy as np
import pytest

from tiler.errors import DatasetError, PlanError
from tiler.labels import IGNORE, LabelScheme
from tiler.model import (
    load_model,
)


def test_class_balanced_sampling_finds_a_rare_class():
    """A 10x10 square of class 1 in a 512x512 image of class 0: uniform patches of 32 px contain it
    about (32 + 9)**2 / 481**2 = 0.7 % of the time; with class_balance=1 half the patches are centred
    (within 8 px) on one of its pixels, so contain it; the other half are centred on class 0."""
    from tiler.training._config import TrainConfig
    from tiler.training._data import LabelledImage
    from tiler.training._sampler import make_sampler

    labels = np.zeros((512, 512), np.uint8)
    labels[300:310, 100:110] = 1
    labels[:, :3] = IGNORE
    data = [LabelledImage("a", np.zeros((1, 512, 512), np.float32), labels)]
    share = {}
    for balance in (0.0, 1.0):
        sampler = make_sampler(data, TrainConfig(patch_size=32, batch_size=50, depth=2, steps_per_epoch=8,
                                                  class_balance=balance), np.zeros(1), np.ones(1))
        y = np.concatenate([sampler[i][1] for i in range(8)])
        share[balance] = np.mean((y == 1).any(axis=(1, 2)))
    assert share[0.0] < 0.05 and 0.4 < share[1.0] < 0.6, share
    with pytest.raises(PlanError, match="class_balance"):
        TrainConfig(class_balance=1.5)


def test_training_runs_on_this_backend_and_its_model_predicts(tmp_path):
    """`train()` under the running Keras backend (CI runs this file under TensorFlow and JAX: the GPU
    path of `tiler train`/`tiler tune` is KERAS_BACKEND=jax or torch): a model is saved, records the
    run, and predicts probabilities through the blending engine."""
    from tests.conftest import labelled_folders
    from tiler.pipeline import predict
    from tiler.training import TrainConfig, train

    labelled_folders(tmp_path, 3, lambda img: img[0] > 128)
    scheme = LabelScheme(("dark", "bright"), ("#000000", "#FFFFFF"))
    report = train(str(tmp_path / "train" / "img"), str(tmp_path / "train" / "mask"), tmp_path / "m.keras",
                   labels=scheme, val_images=str(tmp_path / "val" / "img"),
                   val_masks=str(tmp_path / "val" / "mask"),
                   config=TrainConfig(patch_size=16, batch_size=2, epochs=1, steps_per_epoch=2, depth=2,
                                      base_filters=4, class_balance=0.5, loss="jaccard"))
    assert report["epochs_run"] == 1 and 0 <= report["val_scores"]["mean_iou"] <= 1
    model = load_model(tmp_path / "m.keras")
    assert model.info.training["config"]["class_balance"] == 0.5
    probs = predict(np.full((3, 20, 24), 100, np.float32), model=model, overlap=0.25)
    assert probs.shape == (2, 20, 24) and np.allclose(probs.sum(0), 1, atol=1e-5)


def test_a_resumed_training_equals_an_uninterrupted_one(tmp_path):
    """Issue 22: `tiler train --resume` goes on from the last epoch's checkpoint; with the same seed it ends
    where an uninterrupted run ends (same history, same weights)."""
    from tests.conftest import labelled_folders
    from tiler.training import TrainConfig, checkpoint_folder, train

    labelled_folders(tmp_path, 3, lambda img: img[0] > 128)
    scheme = LabelScheme(("dark", "bright"), ("#000000", "#FFFFFF"))
    config = TrainConfig(patch_size=16, batch_size=2, epochs=4, steps_per_epoch=3, depth=2, base_filters=4,
                         patience=10, seed=3, dropout=0.0)
    args = (str(tmp_path / "train" / "img"), str(tmp_path / "train" / "mask"))
    kw = dict(labels=scheme, val_images=str(tmp_path / "val" / "img"), val_masks=str(tmp_path / "val" / "mask"),
              config=config)
    whole = train(*args, tmp_path / "whole.keras", **kw)

    class Stop(Exception):
        pass

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Stop()

    with pytest.raises(Stop):
        train(*args, tmp_path / "parts.keras", on_epoch=stop_after_two, **kw)
    assert os.path.isfile(os.path.join(checkpoint_folder(tmp_path / "parts.keras"), "state.json"))
    resumed = train(*args, tmp_path / "parts.keras", resume=True, **kw)
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3, 4]
    # Equal up to float rounding: TensorFlow's CPU kernels are not bit-reproducible across a reload of the
    # network (measured: epoch 3 equal to 7 digits, the training loss of epoch 4 within 0.02 %). Without
    # dropout, whose masks after the first resumed epoch are not the uninterrupted run's.
    for a, b in zip(whole["history"], resumed["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=2e-3) and a["val_mean_iou"] == pytest.approx(
            b["val_mean_iou"], abs=0.02)
    # The weights: the same up to float rounding under TensorFlow. Under JAX they differ by up to 1e-3 (of
    # weights ~1e-2 after these 12 steps; the losses above still agree): noted as a limitation, not asserted.
    if keras.backend.backend() == "tensorflow":
        for wa, wb in zip(load_model(tmp_path / "whole.keras").keras_model.get_weights(),
                          load_model(tmp_path / "parts.keras").keras_model.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-2, atol=2e-3)
    assert not os.path.exists(checkpoint_folder(tmp_path / "parts.keras"))
    with pytest.raises(DatasetError, match="another training run"):
        with pytest.raises(Stop):
            train(*args, tmp_path / "other.keras", on_epoch=stop_after_two, **kw)
        train(*args, tmp_path / "other.keras", resume=True, **{**kw, "config": TrainConfig(
            patch_size=16, batch_size=2, epochs=5, steps_per_epoch=3, depth=2, base_filters=4, seed=3,
            dropout=0.0)})
