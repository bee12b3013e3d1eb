"""The self-describing model file: a Keras ``.keras`` archive plus tiler's metadata."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import fields, replace
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from tiler.errors import ModelFileError
from tiler.labels import LabelScheme
from tiler.model._info import METADATA_NAME, ModelInfo
from tiler.model._registry import DEFAULT_MODEL_PATH

__all__ = [
    "METADATA_NAME",
    "DEFAULT_MODEL_PATH",
    "ModelInfo",
    "TilerModel",
    "save_model",
    "load_model",
    "read_info",
    "update_info",
]

class TilerModel:
    """A model file's network together with its :class:`ModelInfo`; the network loads on first use.

    Parameters
    ----------
    keras_model : keras.Model or None
        The network; None: loaded from ``path`` (with Keras) when
        :attr:`keras_model` is first read.
    info : ModelInfo
    path : str, optional
        Where the model file is.

    Attributes
    ----------
    info : ModelInfo
    path : str or None
    predictors : dict
        Predictors built on this model, by their options (see
        :func:`tiler.pipeline.predictor_for`): a process that runs many scenes
        or parts (a dask worker) builds each once.

    Notes
    -----
    A run whose network is already converted (OpenVINO's cache, keyed by
    :attr:`digest`) never reads :attr:`keras_model`, and so never imports
    Keras or its backend.
    """

    def __init__(self, keras_model: Any, info: ModelInfo, path: Optional[str] = None) -> None:
        if keras_model is None and path is None:
            raise ValueError("a TilerModel needs its network or the path of its file")
        self._keras_model, self.info, self.path = keras_model, info, path
        self.predictors: dict = {}
        self._digest: Optional[str] = None

    @property
    def keras_model(self) -> Any:
        """The Keras network (input ``(batch, row, col, channel)``, output ``(batch, row, col, class)``),
        loaded on first use.

        Raises
        ------
        ModelFileError
            If Keras cannot load the file or it does not match its metadata.
        """
        if self._keras_model is None:
            if self.info.is_onnx:
                raise ModelFileError(f"{self.path!r} is an ONNX model: it has no Keras network; run it with "
                                     "--runtime auto, openvino or onnxruntime")
            self._keras_model = _load_network(self.path, self.info)
        return self._keras_model

    @property
    def loaded(self) -> bool:
        """Whether the Keras network is in memory (Keras imported)."""
        return self._keras_model is not None

    @property
    def digest(self) -> str:
        """A digest of everything the network computes from: the model file's bytes (architecture,
        weights, metadata), or, for a network given in memory, its architecture and weights."""
        if self._digest is None:
            h = hashlib.sha256()
            if self._keras_model is None:
                with open(self.path, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            else:
                h.update(self._keras_model.to_json().encode())
                for w in self._keras_model.get_weights():
                    h.update(np.ascontiguousarray(w).tobytes())
                h.update(self.info.to_json().encode())
            self._digest = h.hexdigest()
        return self._digest

    def __repr__(self) -> str:
        return f"TilerModel(path={self.path!r}, classes={list(self.info.classes)}, loaded={self.loaded})"


def save_model(
    model: Any,
    path: Union[str, os.PathLike],
    *,
    channels: Sequence[str],
    classes: Union[LabelScheme, Sequence[str]],
    normalization: Mapping[str, Sequence[float]],
    colours: Optional[Sequence[str]] = None,
    patch_size: int,
    depth: int,
    activation: Optional[str] = None,
    training: Optional[Mapping[str, Any]] = None,
    domain: Any = None,
    inference: Optional[Mapping[str, Any]] = None,
) -> ModelInfo:
    """Save a Keras model as one self-describing ``.keras`` file.

    The optimizer state is not saved: the file is for inference (and for
    fine-tuning from its weights).

    Parameters
    ----------
    model : keras.Model
        Output ``(batch, row, col, K)`` probabilities.
    path : path-like or Destination
        Destination, ending in ``.keras``. Written to a temporary file and
        renamed into place (:class:`tiler.destination.Destination`); a plain
        path replaces an existing file, as a library call asked to save would.
    channels : sequence of str
        Ordered input channel names, one per model input channel.
    classes : LabelScheme or sequence of str
        Output class names (and colours when a scheme is given).
    normalization : mapping
        ``{"offset": [...], "scale": [...]}``, one value per channel: the model
        sees ``(x - offset) / scale``.
    colours : sequence of str, optional
        ``"#RRGGBB"`` per class when ``classes`` is a list of names.
    patch_size, depth : int
        Training patch side and U-Net depth.
    activation : {"softmax", "sigmoid"}, optional
        Taken from the model's last layer when omitted.
    training : mapping, optional
        JSON-serialisable record of the training run.
    domain : InputDomain or mapping, optional
        The training inputs' domain (:func:`tiler.domain.measure_domain`), so
        that ``tiler run`` can refuse scenes far outside it.
    inference : mapping, optional
        Recommended inference ``patch_size``, ``overlap`` and ``window``
        (:attr:`ModelInfo.inference`).

    Returns
    -------
    ModelInfo
        The metadata written.

    Raises
    ------
    ModelFileError
        If the metadata does not match the model.
    """
    import keras

    if isinstance(classes, LabelScheme):
        names, cols = classes.names, classes.colours
    else:
        names = tuple(classes)
        if colours is None:
            raise ModelFileError("give colours=... for each class, or pass a LabelScheme")
        cols = tuple(colours)
    if activation is None:
        activation = getattr(model.layers[-1], "activation", None)
        activation = getattr(activation, "__name__", "softmax")
    info = ModelInfo(
        channels=tuple(channels),
        classes=tuple(names),
        colours=tuple(cols),
        offset=tuple(float(v) for v in normalization["offset"]),
        scale=tuple(float(v) for v in normalization["scale"]),
        activation=str(activation),
        patch_size=int(patch_size),
        depth=int(depth),
        training=dict(training or {}),
        domain=domain.to_dict() if hasattr(domain, "to_dict") else (dict(domain) if domain else None),
        inference=dict(inference) if inference else None,
    )
    in_ch = model.inputs[0].shape[-1]
    out_ch = model.outputs[0].shape[-1]
    if in_ch != len(info.channels) or out_ch != len(info.classes):
        raise ModelFileError(
            f"model takes {in_ch} channels and gives {out_ch} classes, but the metadata "
            f"names {len(info.channels)} channels and {len(info.classes)} classes"
        )
    from tiler.destination import Destination

    dest = Destination.coerce(path, overwrite=True)
    if not dest.path.endswith(".keras"):
        raise ModelFileError(f"model files end in '.keras', got {dest.path!r}")
    if getattr(model, "optimizer", None) is not None:
        clean = keras.models.clone_model(model)
        clean.set_weights(model.get_weights())
        model = clean
    with dest.writing() as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(METADATA_NAME, info.to_json())
    return info


def read_info(path: Union[str, os.PathLike]) -> ModelInfo:
    """Read only the metadata of a model file (fast, no Keras): a ``.keras`` archive's ``tiler.json``, or an
    ONNX model's metadata, sidecar or Deepness keys (:func:`tiler.model._onnx.read_onnx_info`).

    Raises
    ------
    ModelFileError
        If the file is missing, not a ``.keras`` archive or ONNX model, or not described enough to run.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model file {path!r} does not exist; check --model")
    from tiler.model._onnx import is_onnx, read_onnx_info

    if is_onnx(path):
        return read_onnx_info(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if METADATA_NAME not in names:
                kind = "a Keras model without tiler metadata" if "config.json" in names else "not a Keras model"
                raise ModelFileError(
                    f"{path!r} is {kind}: it has no {METADATA_NAME}; "
                    "save it with tiler.model.save_model(...) or train it with `tiler train`"
                )
            text = zf.read(METADATA_NAME).decode("utf-8")
    except zipfile.BadZipFile:
        raise ModelFileError(
            f"{path!r} is not a tiler model (not a .keras zip archive); "
            "pass a file written by `tiler train` or tiler.model.save_model"
        ) from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path!r}: {exc}") from None
    return ModelInfo.from_json(text, source=path)


def update_info(path: Union[str, os.PathLike, Any], **changes: Any) -> ModelInfo:
    """Change fields of a model file's metadata in place, without Keras.

    The weights are copied as they are; the archive is rewritten through a
    temporary file and renamed into place (:class:`tiler.destination.Destination`).

    Parameters
    ----------
    path : path-like or Destination
        A tiler model file.
    **changes
        :class:`ModelInfo` fields to replace, e.g. ``domain=InputDomain(...)``
        (a value with ``to_dict`` is stored as its dict).

    Returns
    -------
    ModelInfo
        The metadata written.

    Raises
    ------
    ModelFileError
        If the file is not a tiler model or a field is unknown or invalid.
    """

    from tiler.destination import Destination

    dest = Destination.coerce(path, overwrite=True)
    info = read_info(dest.path)
    unknown = set(changes) - {f.name for f in fields(ModelInfo)}
    if unknown:
        raise ModelFileError(f"model metadata has no field(s) {sorted(unknown)}")
    changes = {k: v.to_dict() if hasattr(v, "to_dict") else v for k, v in changes.items()}
    info = replace(info, **changes)
    with dest.writing() as tmp, zipfile.ZipFile(dest.path) as src, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if item.filename != METADATA_NAME:
                dst.writestr(item, src.read(item.filename))
        dst.writestr(METADATA_NAME, info.to_json())
    return info


def load_model(path: Union[str, os.PathLike, None] = None, *, lazy: bool = False,
               info: Optional[ModelInfo] = None) -> TilerModel:
    """Load a tiler model file.

    Parameters
    ----------
    path : path-like, optional
        A ``.keras`` file written by :func:`save_model`. The default model
        shipped with tiler when omitted.
    lazy : bool, default False
        Read only the metadata now (no Keras); the network loads when
        :attr:`TilerModel.keras_model` is first read. A run whose network is
        already converted never loads it.
    info : ModelInfo, optional
        The file's metadata where the caller has already read it (:func:`read_info`); read here otherwise.

    Returns
    -------
    TilerModel

    Raises
    ------
    ModelFileError
        If the file is missing, not a Keras archive, lacks tiler's metadata, or
        does not match it (with ``lazy``, a mismatch is raised when the network
        loads).
    """
    path = os.fspath(DEFAULT_MODEL_PATH if path is None else path)
    info = read_info(path) if info is None else info
    return TilerModel(None if lazy or info.is_onnx else _load_network(path, info), info, path)


def _load_network(path: str, info: ModelInfo):
    """The Keras network of a model file, checked against its metadata."""
    from tiler.model._backend import import_keras

    keras = import_keras()
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a broken archive
        raise ModelFileError(f"Keras cannot load {path!r}: {exc}") from None
    if model.inputs[0].shape[-1] != len(info.channels) or model.outputs[0].shape[-1] != len(info.classes):
        raise ModelFileError(
            f"{path!r}: the network takes {model.inputs[0].shape[-1]} channels and gives "
            f"{model.outputs[0].shape[-1]} classes, but its metadata says "
            f"{len(info.channels)} and {len(info.classes)}; re-save it"
        )
    return model
