"""``tiler tune``: search the U-Net's architecture and training options with optuna, a fresh process per trial.

The study lives in a journal file in the output folder (optuna's
``JournalStorage`` with a file backend: an append-only log that parallel
writers share without SQLite's locking), so a search that is interrupted
resumes where it stopped; a trial whose process was killed is marked failed.
Each trial trains in a fresh Python process (:mod:`tiler.training._trial`),
on a dask.distributed worker where ``workers``/``scheduler`` are given; the
objective is the validation mean IoU of whole held-out images predicted through
the blending engine of ``tiler run`` (what :func:`~tiler.training.train` scores
every epoch), and each epoch's value is reported to the pruner.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from tiler.destination import Destination
from tiler.errors import ModelFileError, PlanError, UsageError
from tiler.labels import LabelScheme
from tiler.model import read_info
from tiler.training._config import TrainConfig
from tiler.training._space import DEFAULT_SPACE, Param
from tiler.training._study import PRUNERS, STUDY_FILE, STUDY_NAME, make_pruner, open_storage
from tiler.training._trial import run_trial_process

__all__ = ["PRUNERS", "STUDY_FILE", "TuneConfig", "make_pruner", "open_storage", "tune"]

#: Parameters a fine-tuning search (``init``) cannot change: they are the
#: starting model's architecture and initialisation.
ARCHITECTURE = ("depth", "base_filters", "kernel_initializer", "batch_norm", "dropout", "encoder")


@dataclass(frozen=True)
class TuneConfig:
    """Options of a search.

    Parameters
    ----------
    trials : int, default 20
        Finished trials (complete or pruned) the study should have; a resumed
        search runs only the missing ones. Failed trials do not count (at
        most ``trials`` of them are run in all).
    timeout_minutes : float, optional
        Start no new trial after this many minutes (running ones finish).
    seed : int, default 0
        Seed of the TPE sampler (and of each trial's training).
    pruner : str, default "median"
        One of :data:`PRUNERS`.
    space : mapping of str to Param
        The search space (:data:`tiler.training.DEFAULT_SPACE`,
        :func:`tiler.training.load_space`).
    base : TrainConfig
        The training options the space does not set (epochs, steps per
        epoch, patience, ...).

    Raises
    ------
    UsageError
        For a bad count, timeout or pruner.
    """

    trials: int = 20
    timeout_minutes: Optional[float] = None
    seed: int = 0
    pruner: str = "median"
    space: Mapping[str, Any] = field(default_factory=dict)
    base: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.trials, int) or self.trials < 1:
            raise UsageError(f"--trials must be a positive integer, got {self.trials!r}")
        if self.timeout_minutes is not None and self.timeout_minutes <= 0:
            raise UsageError(f"--timeout must be positive minutes, got {self.timeout_minutes!r}")
        make_pruner(self.pruner, 1)
        if not self.space:
            object.__setattr__(self, "space", dict(DEFAULT_SPACE))
        if self.base is None:
            object.__setattr__(self, "base", TrainConfig(epochs=15, steps_per_epoch=50, patience=4))


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """One ``tiler tune`` per folder: its running trials are then known to be ours or dead."""
    lock = open(folder / ".tune.lock", "w")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            pass
        except OSError:
            raise UsageError(f"another `tiler tune` is running in {str(folder)!r}; wait for it or use another "
                             "--out-dir") from None
        yield
    finally:
        lock.close()


def _trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name.lower(), "value": t.value,
                     "seconds": t.user_attrs.get("seconds"), "epochs_run": t.user_attrs.get("epochs_run"),
                     "reason": t.user_attrs.get("reason"), **{f"param_{k}": v for k, v in t.params.items()}})
    return rows


def _write_tables(study, out: Path) -> None:
    """``trials.json`` and ``trials.csv``: every trial's state, value, parameters and reason (atomic writes)."""
    rows = _trial_rows(study)
    Destination(out / "trials.json", overwrite=True).write_text(json.dumps(rows, indent=1, default=str))
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("param_"), k))
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    Destination(out / "trials.csv", overwrite=True).write_text(table.getvalue())


def _plots(study, out: Path) -> list[str]:
    """Optimisation history and parameter importances (PED-ANOVA, no scikit-learn) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    written = []
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return written

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib plots experimental
        ax = ovm.plot_optimization_history(study)
        ax.set_ylabel("validation mean IoU")
        ax.figure.savefig(out / "history.png", dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
        written.append("history.png")
        if len(complete) >= 2 and any(len({str(t.params.get(k)) for t in complete}) > 1
                                      for k in complete[0].params):
            try:
                ax = ovm.plot_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
                ax.figure.savefig(out / "importances.png", dpi=100, bbox_inches="tight")
                plt.close(ax.figure)
                written.append("importances.png")
            except (RuntimeError, ValueError):  # too few distinct trials to rank parameters
                pass
    return written


def tune(
    images: str,
    masks: Optional[str],
    out_dir: Any,
    *,
    classes: str,
    val_images: str,
    val_masks: Optional[str],
    config: TuneConfig = TuneConfig(),
    vector_labels: Optional[str] = None,
    label_field: str = "class",
    channels: Optional[Sequence[str]] = None,
    band_names: Optional[Sequence[str]] = None,
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    progress: Optional[Callable[[str], None]] = None,
    init: Optional[str] = None,
    command: Optional[str] = None,
) -> dict:
    """Search hyperparameters with optuna's TPE sampler; keep the best model.

    Parameters
    ----------
    images, masks, val_images, val_masks, vector_labels, label_field, channels, band_names
        The data, as for :func:`tiler.training.train`.
    out_dir : path-like
        Created if absent. Holds ``study.journal`` (the study: resume by
        running the same command again), ``trials/NNNN.keras`` (each complete
        trial's model), ``best.keras`` (the best, ready for ``tiler run``),
        ``trials.json``/``trials.csv`` (every trial: state, value, params,
        reason) and ``history.png``/``importances.png``.
    classes : str
        The class scheme JSON file.
    config : TuneConfig
    workers, scheduler
        Run trials on a local dask cluster of ``workers`` processes (as many
        trials at once), or on the cluster at ``scheduler``; default: one at a
        time from this process. Either way each trial is a fresh process.
    progress : callable, optional
        Called with one line per finished trial (its state and score, the
        best so far).
    init : path-like, optional
        A tiler model file every trial fine-tunes from (its weights and
        normalisation, :func:`tiler.training.train` ``init``). Its
        architecture is fixed: the :data:`ARCHITECTURE` parameters are dropped
        from the space and ``depth`` is the model's.
    command : str, optional
        The command line, recorded (with the trial number) in each trial's
        model file.

    Returns
    -------
    dict
        ``{"trials": {state: count}, "best": {...} or None, "out_dir", "files"}``.

    Raises
    ------
    UsageError
        For another search running in ``out_dir``, a study there that was
        run on other data, or an ``init`` model that is not a tiler model of
        these classes.
    """
    import optuna

    from tiler.distributed import cluster

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if init is not None:  # refused before the output folder exists
        config = _fine_tuning(config, init, classes)
        init = os.path.abspath(init)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trials").mkdir(exist_ok=True)
    data = {"images": images, "masks": masks, "val_images": val_images, "val_masks": val_masks,
            "vector_labels": vector_labels, "label_field": label_field, "classes": os.path.abspath(classes),
            "channels": list(channels) if channels else None,
            "band_names": list(band_names) if band_names else None}
    t0 = time.perf_counter()
    with _exclusive(out):
        search = _Search(out, config, data, init=init, command=command, say=progress or (lambda line: None),
                         t0=t0)
        with cluster(workers, scheduler) as client:
            if client is None:
                search.run_here()
            else:
                search.run_on(client, workers or max(1, len(client.scheduler_info().get("workers", {}))))
        files = ["study.journal", "trials.json", "trials.csv"] + _plots(search.study, out)
        _write_tables(search.study, out)
        best = _best(search.study)
        if best is not None:
            files.append("best.keras")
        tally: dict = {}
        for t in search.study.get_trials(deepcopy=False):
            tally[t.state.name.lower()] = tally.get(t.state.name.lower(), 0) + 1
    return {"trials": tally, "out_dir": str(out), "files": files,
            "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                               "model": str(out / "best.keras")},
            "minutes": round((time.perf_counter() - t0) / 60, 2)}


class _Search:
    """The study of one :func:`tune` in ``out``: asks optuna for trials, runs them, tells it their results.

    Opening it resumes the study in ``out`` (refused if it was run on other
    data) and marks the trials a killed search left running as failed.
    """

    def __init__(self, out: Path, config: TuneConfig, data: dict, *, init: Optional[str], command: Optional[str],
                 say: Callable[[str], None], t0: float) -> None:
        import optuna

        self.out, self.config, self.data, self.init, self.command, self.say, self.t0 = \
            out, config, data, init, command, say, t0
        self.storage = open_storage(out / STUDY_FILE)
        self.study = optuna.create_study(study_name=STUDY_NAME, storage=self.storage, load_if_exists=True,
                                         direction="maximize",
                                         pruner=make_pruner(config.pruner, config.base.epochs))
        # A resumed search must not replay the random start of the first run: seed by the trials so far.
        self.study.sampler = optuna.samplers.TPESampler(
            seed=config.seed + len(self.study.get_trials(deepcopy=False)))
        inputs = {"init": init} if init is not None else {}
        inputs |= {k: data[k] for k in ("images", "masks", "val_images", "val_masks", "vector_labels", "classes",
                                        "channels")}
        if "inputs" not in self.study.user_attrs:
            self.study.set_user_attr("inputs", inputs)
        elif self.study.user_attrs["inputs"] != json.loads(json.dumps(inputs)):
            raise UsageError(f"the study in {str(out)!r} was run on other data ({self.study.user_attrs['inputs']}); "
                             "use another --out-dir")
        for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            # Only this process may run trials here (the lock): a running trial is a killed one.
            self.storage.set_trial_user_attr(t._trial_id, "reason", "killed: the search stopped while it ran")
            self.storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            say(f"trial {t.number}: marked failed (the search stopped while it ran)")

    def counts(self) -> tuple[int, int]:
        """Trials finished (complete or pruned), trials failed."""
        import optuna

        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        done = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
        return done, sum(s == optuna.trial.TrialState.FAIL for s in states)

    def more(self) -> bool:
        """Whether to start another trial: too few finished, not all failed, time left."""
        done, failed = self.counts()
        config = self.config
        over = config.timeout_minutes is not None and (time.perf_counter() - self.t0) / 60 >= config.timeout_minutes
        return done < config.trials and failed < config.trials and not over

    def start(self, trial) -> Optional[str]:
        """Suggest the trial's options; write its spec; None (and the trial failed) if they are invalid."""
        params = {"seed": self.config.seed + trial.number}
        params.update({name: p.suggest(trial) for name, p in self.config.space.items()})
        try:
            train_config = dataclasses.replace(self.config.base, **params)
        except (PlanError, UsageError, TypeError, ValueError) as exc:
            self.finish(trial, {"state": "failed", "reason": f"invalid combination: {exc}"})
            return None
        trials = self.out / "trials"
        spec = {"storage": str(self.out / STUDY_FILE), "study": STUDY_NAME, "trial_id": trial._trial_id,
                "number": trial.number, "pruner": self.config.pruner, **self.data,
                "config": dataclasses.asdict(train_config),
                "init": self.init, "out": str(trials / f"{trial.number:04d}.keras"),
                "result": str(trials / f"{trial.number:04d}.json"),
                "command": f"{self.command or 'tiler tune'} (trial {trial.number})"}
        path = trials / f"{trial.number:04d}.spec.json"
        path.write_text(json.dumps(spec, indent=1))
        return str(path)

    def finish(self, trial, result: dict) -> None:
        """Tell the study a trial's result; keep its model if complete, copy it to best.keras if best."""
        import optuna

        for key in ("reason", "seconds", "epochs_run"):
            if result.get(key) is not None:
                self.storage.set_trial_user_attr(trial._trial_id, key, result[key])
        state = result["state"]
        if state == "complete":
            self.study.tell(trial, float(result["value"]))
        elif state == "pruned":
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        model = self.out / "trials" / f"{trial.number:04d}.keras"
        if state != "complete":
            model.unlink(missing_ok=True)
        best = _best(self.study)
        if state == "complete" and best is not None and best.number == trial.number:
            with Destination(self.out / "best.keras", overwrite=True).writing() as tmp:
                shutil.copyfile(model, tmp)
        _write_tables(self.study, self.out)
        value = f" mean IoU {result['value']:.4f}" if state == "complete" else ""
        why = f" ({result['reason']})" if result.get("reason") else ""
        best_text = f"best {best.value:.4f} (trial {best.number})" if best is not None else "no best yet"
        self.say(f"trial {trial.number}: {state}{value}{why}; {best_text}")

    def run_here(self) -> None:
        """Trials one after the other, each in a fresh process started from this one."""

        while self.more():
            trial = self.study.ask()
            spec = self.start(trial)
            if spec is None:
                continue
            try:
                result = run_trial_process(spec)
            except BaseException:  # Ctrl-C, SIGTERM: the trial is failed, not left running
                self.finish(trial, {"state": "failed", "reason": "interrupted: the search was stopped"})
                raise
            self.finish(trial, result)

    def run_on(self, client, slots: int) -> None:
        """Up to ``slots`` trials at once on a dask cluster, each a fresh process started by a worker."""
        from distributed import as_completed

        running: dict = {}
        pool = as_completed()

        def launch() -> None:
            while len(running) < slots and self.more() and self.counts()[0] + len(running) < self.config.trials:
                trial = self.study.ask()
                spec = self.start(trial)
                if spec is not None:
                    future = client.submit(run_trial_process, spec, pure=False)
                    running[future.key] = trial
                    pool.add(future)

        try:
            launch()
            for future in pool:
                trial = running.pop(future.key)
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 - a lost worker fails its trial, not the search
                    result = {"state": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                self.finish(trial, result)
                launch()
        except BaseException:  # Ctrl-C, SIGTERM: the running trials are failed, not left running
            for trial in running.values():
                self.finish(trial, {"state": "failed", "reason": "interrupted: the search was stopped"})
            raise


def _fine_tuning(config: TuneConfig, init: str, classes: str) -> TuneConfig:
    """The search of ``config`` restricted to what fine-tuning the model ``init`` can change."""

    try:
        info = read_info(init)
    except ModelFileError as exc:
        raise UsageError(f"--init: {exc}") from exc
    names = LabelScheme.from_file(classes).names
    if tuple(info.classes) != tuple(names):
        raise UsageError(f"--init model {str(init)!r} predicts classes {list(info.classes)}, but the class file "
                         f"has {list(names)}; fine-tune a model of the same classes")

    space = {k: v for k, v in config.space.items() if k not in ARCHITECTURE}
    space["depth"] = Param("depth", "fixed", value=info.depth)  # train() checks it against the model
    return dataclasses.replace(config, space=space)


def _best(study):
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    return max(complete, key=lambda t: t.value) if complete else None
