"""Models by name: the bundled default and those installed packages register.

``tiler models`` lists them and ``--model NAME`` works wherever a path does. A
package adds models without changing tiler by declaring an entry point in the
group ``tiler.models`` (``[project.entry-points."tiler.models"]`` in its
``pyproject.toml``) that names a callable returning :class:`NamedModel` values;
tiler's own cloud masks (:mod:`tiler.model._clouds`) are registered the same
way, and appear only where their package (``ukis-csmask``) is installed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Optional

from tiler.errors import ModelFileError

__all__ = ["DEFAULT_MODEL_PATH", "ENTRY_POINT_GROUP", "NamedModel", "available_models", "resolve_model_path",
           "registered_info"]

log = logging.getLogger(__name__)

#: The default model shipped inside the package.
DEFAULT_MODEL_PATH = Path(__file__).with_name("default.keras")
#: The entry-point group of model providers.
ENTRY_POINT_GROUP = "tiler.models"


@dataclass(frozen=True)
class NamedModel:
    """A model available by name.

    Attributes
    ----------
    name : str
        The ``--model`` value.
    path : str
        Its file (``.keras`` or ``.onnx``) where the providing package installed it.
    description : str
    licence : str
    source : str
        Who trained it, on what, and where that is documented.
    describe : callable, optional
        ``describe() -> ModelInfo`` for a file that does not carry tiler's
        metadata itself (a package's ONNX file described by its own JSON).
    """

    name: str
    path: str
    description: str
    licence: str
    source: str
    describe: Optional[Callable[[], Any]] = None


def _bundled() -> list[NamedModel]:
    return [NamedModel("default", os.fspath(DEFAULT_MODEL_PATH),
                       "the bundled aerial RGB model (building, land, road, vegetation, water)",
                       "MIT (tiler); trained on CC0 imagery", "tiler, docs/model-card.md")]


def available_models() -> dict[str, NamedModel]:
    """Every model available by name: ``default`` first, then the entry points' (sorted by name).

    A provider that fails to load is logged and skipped (one broken package
    does not hide the others); a name given twice keeps its first provider.
    """

    models = {m.name: m for m in _bundled()}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            provided = list(ep.load()())
        except Exception as exc:  # noqa: BLE001 - a third party's broken provider must not break tiler
            log.warning("model provider %s (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        for m in provided:
            if m.name in models:
                log.warning("model name %r from %s is taken; ignored", m.name, ep.name)
                continue
            models[m.name] = m
    return models


def resolve_model_path(model, *, option: str = "--model") -> str:
    """The file of ``--model`` (or another option that reads a model): an existing path as it is, else a
    registered name's file.

    Parameters
    ----------
    model : path-like or str
        A path, a model name (``default``, ``tiler models``), or a STAC Item describing a model with the
        Machine Learning Model extension (its ``mlm:model`` asset; :func:`tiler.model.model_from_mlm`).
    option : str, default "--model"
        How the message names the option (``--init``, ``MODEL``).

    Raises
    ------
    ModelFileError
        Neither a file nor a registered name (the message lists the names).
    """
    text = os.fspath(model)
    from tiler.model._mlm import is_mlm_item, model_from_mlm

    if is_mlm_item(text):  # a STAC MLM Item: the model file it describes, checked against it
        return model_from_mlm(text)
    if os.path.exists(text):
        return text
    models = available_models()
    if text in models:
        return models[text].path
    raise ModelFileError(f"{option} {text!r} is neither a model file nor a model name; names: "
                         f"{', '.join(models)} (`tiler models` lists them); check {option}")


def registered_info(path) -> Optional[Any]:
    """The description a provider gives of ``path`` where the file carries none itself, else None."""
    target = os.path.realpath(os.fspath(path))
    for m in available_models().values():
        if m.describe is not None and os.path.realpath(m.path) == target:
            return m.describe()
    return None
