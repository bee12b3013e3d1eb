"""The optuna study of ``tiler tune``: its journal storage and pruners, shared by the search and its trial
processes (:mod:`tiler.training._tune`, :mod:`tiler.training._trial`)."""

from __future__ import annotations

from tiler.errors import UsageError

__all__ = ["PRUNERS", "STUDY_FILE", "STUDY_NAME", "make_pruner", "open_storage"]

#: The study's journal, in the output folder.
STUDY_FILE = "study.journal"
STUDY_NAME = "tiler-tune"
#: Pruners on the per-epoch validation mean IoU: optuna's median rule (after
#: 2 finished trials and 1 epoch), Hyperband (Li et al. 2018, JMLR 18), none, or
#: ``threshold:X`` (stop a trial whose value falls below X).
PRUNERS = ("median", "hyperband", "none", "threshold:X")

def make_pruner(name: str, epochs: int):
    """The optuna pruner named ``name`` (see :data:`PRUNERS`) for trials of ``epochs`` epochs.

    Raises
    ------
    UsageError
        For an unknown name.
    """
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(int(epochs), 1))
    if name == "none":
        return optuna.pruners.NopPruner()
    if name.startswith("threshold:"):
        try:
            return optuna.pruners.ThresholdPruner(lower=float(name.split(":", 1)[1]))
        except ValueError:
            pass
    raise UsageError(f"unknown pruner {name!r}; use median, hyperband, none or threshold:X (e.g. threshold:0.2)")


def open_storage(path: str):
    """optuna's journal storage on the file ``path`` (created where absent).

    Parameters
    ----------
    path : path-like
        The study's journal file (``--out-dir/study.journal``).

    Returns
    -------
    optuna.storages.JournalStorage
        With a file backend: an append-only log that several processes (the
        search and its trial processes) read and write under a file lock.
    """
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(path)))
