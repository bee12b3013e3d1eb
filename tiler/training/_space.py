"""The search space of ``tiler tune``: named hyperparameters of :class:`~tiler.training.TrainConfig`."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from tiler.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["DEFAULT_SPACE", "Param", "load_space"]

KINDS = ("int", "float", "categorical", "fixed")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its kind and range, as optuna suggests it.

    Parameters
    ----------
    name : str
        A :class:`~tiler.training.TrainConfig` field.
    kind : {"int", "float", "categorical", "fixed"}
    low, high : float, optional
        Bounds of an ``int``/``float`` (inclusive).
    log : bool, default False
        Sample an ``int``/``float`` uniformly in log space.
    choices : tuple, optional
        The values of a ``categorical``.
    value : optional
        The value of a ``fixed`` parameter (not searched).

    Raises
    ------
    UsageError
        For an unknown kind or missing bounds/choices.
    """

    name: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[tuple] = None
    value: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"search space: {self.name} has kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind in ("int", "float") and (self.low is None or self.high is None or self.low > self.high):
            raise UsageError(f"search space: {self.name} ({self.kind}) needs low <= high, got {self.low}, {self.high}")
        if self.kind == "categorical":
            if not self.choices:
                raise UsageError(f"search space: {self.name} (categorical) needs a non-empty list of choices")
            object.__setattr__(self, "choices", tuple(self.choices))

    def suggest(self, trial) -> Any:
        """The trial's value (``trial.suggest_*``; a fixed value as is)."""
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, self.choices)
        return self.value

    def to_dict(self) -> dict:
        """JSON-ready form (what ``--space`` TOML tables hold)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, False) and k != "name"}


#: The default search space (the source recipe's: architecture, initialisation,
#: regularisation, optimiser, data and loss). Every name is a TrainConfig field.
DEFAULT_SPACE: Mapping[str, Param] = {p.name: p for p in (
    Param("depth", "int", low=2, high=4),
    Param("base_filters", "categorical", choices=(8, 16, 24, 32)),
    Param("kernel_initializer", "categorical", choices=("he_uniform", "glorot_uniform")),
    Param("batch_norm", "categorical", choices=(True, False)),
    Param("dropout", "float", low=0.0, high=0.3),
    Param("learning_rate", "float", low=1e-4, high=3e-3, log=True),
    Param("batch_size", "categorical", choices=(4, 8, 16)),
    Param("patch_size", "categorical", choices=(128, 192, 256)),
    Param("loss", "categorical", choices=("dice", "jaccard")),
    Param("dice_weight", "float", low=0.25, high=2.0),
    Param("jitter", "float", low=0.0, high=0.2),
    Param("class_balance", "float", low=0.0, high=0.75),
)}


def load_space(path, *, base: Optional[Mapping[str, Param]] = None) -> dict[str, Param]:
    """Read a search space from TOML: the default space with the file's parameters replaced or added.

    Each parameter is a table, or a plain value to fix it::

        [learning_rate]
        kind = "float"
        low = 1e-4
        high = 1e-2
        log = true

        [base_filters]
        kind = "categorical"
        choices = [16, 32]

        depth = 3            # fixed: not searched

    A table ``[remove]`` with ``names = [...]`` drops default parameters (their
    TrainConfig defaults then apply).

    Parameters
    ----------
    path : path-like
    base : mapping, optional
        The space the file modifies; default :data:`DEFAULT_SPACE`.

    Returns
    -------
    dict of str to Param

    Raises
    ------
    UsageError
        For a file that is not TOML, a name that is not a TrainConfig field,
        or a malformed parameter.
    """
    from tiler.training._config import TrainConfig

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read the search space {str(path)!r}: {exc}") from exc
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    space = dict(DEFAULT_SPACE if base is None else base)
    for name in doc.get("remove", {}).get("names", []):
        space.pop(name, None)
    for name, spec in doc.items():
        if name == "remove":
            continue
        if name not in fields:
            raise UsageError(f"search space {str(path)!r}: {name!r} is not a training option; "
                             f"use one of {', '.join(sorted(fields))}")
        if isinstance(spec, dict):
            unknown = set(spec) - {"kind", "low", "high", "log", "choices", "value"}
            if unknown or "kind" not in spec:
                raise UsageError(f"search space {str(path)!r}: [{name}] needs kind = int|float|categorical and "
                                 f"low/high or choices; unknown keys {sorted(unknown)}")
            space[name] = Param(name, **spec)
        else:
            space[name] = Param(name, "fixed", value=spec)
    return space
