"""`tiler tune`: a tiny real search (optuna, a fresh process per trial) that resumes after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import labelled_folders
from tiler.cli import main

optuna = pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna)")

ROOT = Path(__file__).resolve().parents[1]
TINY = "depth = 2\nbatch_size = 2\npatch_size = 16\n[base_filters]\nkind = \"categorical\"\nchoices = [4, 8]\n"


@pytest.fixture
def data(tmp_path):
    labelled_folders(tmp_path, 3, lambda img: img[0] > 128)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": [{"name": "dark", "colour": "#000000"},
                                               {"name": "bright", "colour": "#FFFFFF"}]}))
    return tmp_path


def _args(d, out, space, *extra):
    return [str(d / "train" / "img"), str(d / "train" / "mask"), "--val-images", str(d / "val" / "img"),
            "--val-masks", str(d / "val" / "mask"), "--classes", str(d / "classes.json"), "--out-dir", str(out),
            "--space", str(space), "--steps-per-epoch", "2", *extra]


def _study(out):
    from tiler.training._tune import STUDY_NAME, open_storage

    return optuna.load_study(study_name=STUDY_NAME, storage=open_storage(out / "study.journal"))


def _states(out):
    return [t.state.name for t in _study(out).trials]


def test_search_killed_between_trials_resumes_and_its_best_model_runs(data, tmp_path, runner):
    """The process (and its trial) killed after the first finished trial; the same command finishes
    the search: the killed trial is marked failed, never left running, and the finished trials are kept.
    The parent's memory does not grow with the trials (each trains in its own process)."""
    import psutil

    from tiler.training import TrainConfig, TuneConfig, load_space, tune

    space = tmp_path / "space.toml"
    space.write_text(TINY)
    out = tmp_path / "search"
    cmd = [sys.executable, "-c", "import sys; from tiler.cli import main; sys.exit(main())", "tune",
           *_args(data, out, space, "--trials", "3", "--epochs", "1", "--pruner", "none")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=ROOT)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            states = _states(out) if (out / "study.journal").exists() else []
            if "COMPLETE" in states and "RUNNING" in states:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the search ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the search and its trial process
        proc.wait()
    before = _study(out).trials
    assert [t.state.name for t in before].count("COMPLETE") >= 1 and before[-1].state.name == "RUNNING"
    killed = before[-1].number

    rss = []
    config = TuneConfig(trials=3, pruner="none", space=load_space(space),
                        base=TrainConfig(epochs=1, steps_per_epoch=2, patience=4))
    report = tune(str(data / "train" / "img"), str(data / "train" / "mask"), out,
                  classes=str(data / "classes.json"), val_images=str(data / "val" / "img"),
                  val_masks=str(data / "val" / "mask"), config=config,
                  progress=lambda line: rss.append(psutil.Process().memory_info().rss))
    after = _study(out).trials
    assert after[killed].state.name == "FAIL" and "killed" in after[killed].user_attrs["reason"]
    assert [t.state.name for t in after].count("COMPLETE") == 3 and "RUNNING" not in [t.state.name for t in after]
    for t in before:
        if t.state.name == "COMPLETE":  # kept, not re-run
            assert after[t.number].value == t.value and after[t.number].params == t.params
    assert report["trials"] == {"complete": 3, "fail": 1}
    assert max(rss) - min(rss) < 64 * 2**20, [r / 2**20 for r in rss]  # generous: flat within 64 MB

    rows = json.loads((out / "trials.json").read_text())
    assert [r["state"] for r in rows] == [t.state.name.lower() for t in after]
    assert (out / "trials.csv").read_text().splitlines()[0].startswith("epochs_run,")
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    best = max((t for t in after if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert report["best"]["number"] == best.number
    r = runner.invoke(main, ["run", str(data / "val" / "img" / "im0.tif"), "-o", str(tmp_path / "pred.tif"),
                             "--model", str(out / "best.keras")])
    assert r.exit_code == 0, r.output


def test_pruned_and_failed_trials_are_recorded_and_the_search_goes_on(data, tmp_path, runner):
    """A combination the U-Net cannot take (patch 18 with depth 2) fails with the reason; a trial whose
    epoch score is below the threshold pruner's bound is pruned; neither stops the search. Two trials
    run at once on a local dask cluster. (Seed 8: TPE's random start draws 18, 16, 16.)"""
    space = tmp_path / "space.toml"
    space.write_text("depth = 2\nbatch_size = 2\nbase_filters = 4\n"
                     "[patch_size]\nkind = \"categorical\"\nchoices = [16, 18]\n"
                     "[remove]\nnames = [\"kernel_initializer\", \"batch_norm\", \"dropout\", \"learning_rate\", "
                     "\"loss\", \"dice_weight\", \"jitter\"]\n")
    out = tmp_path / "search"
    r = runner.invoke(main, ["tune", *_args(data, out, space, "--trials", "2", "--epochs", "2",
                                            "--pruner", "threshold:1.01", "--seed", "8", "--workers", "2")])
    assert r.exit_code == 0, r.output
    trials = _study(out).trials
    states = [t.state.name for t in trials]
    assert states.count("PRUNED") == 2 and "FAIL" in states and "RUNNING" not in states
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert all(t.params["patch_size"] == 18 and "not divisible by 2**depth" in t.user_attrs["reason"]
               for t in failed)
    assert max(t.number for t in trials if t.state.name == "PRUNED") > min(t.number for t in failed)
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert all(t.intermediate_values and max(t.intermediate_values) == 1 for t in pruned)  # after epoch 1
    assert "pruned" in r.output and "no trial completed" in r.output
    assert not (out / "best.keras").exists() and not list((out / "trials").glob("*.keras"))


def test_bad_space_and_options_are_refused(data, tmp_path, runner):
    bad = tmp_path / "bad.toml"
    bad.write_text("[epochz]\nkind = \"int\"\nlow = 1\nhigh = 2\n")
    r = runner.invoke(main, ["tune", *_args(data, tmp_path / "o", bad)])
    assert r.exit_code == 2 and "'epochz' is not a training option" in r.output
    good = tmp_path / "good.toml"
    good.write_text(TINY)
    r = runner.invoke(main, ["tune", *_args(data, tmp_path / "o", good, "--pruner", "sometimes")])
    assert r.exit_code == 2 and "unknown pruner 'sometimes'" in r.output
    from tiler.training import DEFAULT_SPACE, TrainConfig

    fields = set(TrainConfig.__dataclass_fields__)
    assert set(DEFAULT_SPACE) <= fields and {"kernel_initializer", "batch_norm", "loss"} <= set(DEFAULT_SPACE)
    assert np.isclose(DEFAULT_SPACE["learning_rate"].low, 1e-4) and DEFAULT_SPACE["learning_rate"].log


def test_fine_tuning_search_starts_every_trial_from_the_given_model(data, tmp_path, runner):
    """--init: each trial starts from the model's weights (its training record names it), the
    architecture parameters are not searched, and the best model keeps the starting architecture.
    A file that is not a tiler model, or a model of other classes, is refused before any trial."""
    from tiler.model import load_model, read_info

    start = tmp_path / "start.keras"
    r = runner.invoke(main, ["train", str(data / "train" / "img"), str(data / "train" / "mask"),
                             "--val-images", str(data / "val" / "img"), "--val-masks", str(data / "val" / "mask"),
                             "--classes", str(data / "classes.json"), "-o", str(start), "--depth", "2",
                             "--base-filters", "4", "--patch-size", "16", "--batch-size", "2", "--epochs", "1",
                             "--steps-per-epoch", "2"])
    assert r.exit_code == 0, r.output
    space = tmp_path / "space.toml"
    space.write_text("batch_size = 2\npatch_size = 16\n")  # depth, filters, initialiser, ... stay in the space
    out = tmp_path / "search"
    r = runner.invoke(main, ["tune", *_args(data, out, space, "--trials", "1", "--epochs", "1", "--pruner", "none",
                                            "--init", str(start))])
    assert r.exit_code == 0, r.output
    (trial,) = _study(out).trials
    assert trial.state.name == "COMPLETE"
    assert not {"depth", "base_filters", "kernel_initializer", "batch_norm", "dropout"} & set(trial.params)
    assert "learning_rate" in trial.params
    best = read_info(out / "best.keras")
    assert best.training["init"] == str(start) and best.depth == 2
    assert best.training["command"].startswith("tiler tune ") and best.training["command"].endswith("(trial 0)")
    shapes = [w.shape for w in load_model(out / "best.keras").keras_model.weights]
    assert shapes == [w.shape for w in load_model(start).keras_model.weights]

    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    r = runner.invoke(main, ["tune", *_args(data, tmp_path / "o2", space, "--init", str(junk))])
    assert r.exit_code == 2 and "--init: " in r.output and "is not a tiler model" in r.output
    assert not (tmp_path / "o2").exists()  # refused before the study folder is made
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"classes": [{"name": "a", "colour": "#000000"}, {"name": "b", "colour": "#FF0000"}]}))
    args = _args(data, tmp_path / "o3", space, "--init", str(start))
    args[args.index("--classes") + 1] = str(other)
    r = runner.invoke(main, ["tune", *args])
    assert r.exit_code == 2 and "predicts classes ['dark', 'bright']" in r.output
    assert not (tmp_path / "o3").exists()
