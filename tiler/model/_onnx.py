"""ONNX models: what tiler needs to know of one, read from its metadata, and running it.

Most segmentation models of the field come from PyTorch (segmentation-models-
pytorch, TorchGeo) and travel as ONNX. tiler runs one with ``--model
model.onnx`` once it knows what the network expects and gives, read in this
order:

1. the ONNX file's ``metadata_props`` under the key ``tiler``: the JSON of
   :class:`~tiler.model.ModelInfo` (what a ``.keras`` file holds in
   ``tiler.json``), whose ``network`` entry says ``{"format": "onnx",
   "layout": "NCHW" | "NHWC", "output": "probabilities" | "logits"}``;
2. a sidecar ``model.onnx.json`` beside it holding the same JSON;
   (a file a registered provider describes, :mod:`tiler.model._registry`, takes
   its provider's description here);
3. the keys of the Deepness QGIS plugin (PUTvision/qgis-plugin-deepness,
   ``src/deepness/processing/models/model_base.py`` and
   ``docs/source/creators/creators_add_metadata_to_model.rst``): ``model_type``
   (``"Segmentor"``), ``class_names`` (``{"0": "background", ...}``),
   ``resolution`` (cm per pixel), ``tile_size`` (the docs spell it
   ``tiles_size``; both are read), ``tiles_overlap`` (percent),
   ``standardization_mean``/``standardization_std`` (on values / 255). Deepness
   feeds the first bands of a raster as 0-255 values, NCHW, and reads
   per-class probabilities; tiler takes three channels as red, green, blue.

Anything else is refused with the list of what is missing and a sidecar
template to fill in (:func:`sidecar_template`).
"""

from __future__ import annotations

import ast
import json
import os
from typing import Any, Optional

import numpy as np

from tiler.errors import ModelFileError, PlanError

__all__ = ["ONNX_SUFFIX", "is_onnx", "read_onnx_info", "sidecar_template", "OnnxRuntime"]

ONNX_SUFFIX = ".onnx"
#: The metadata key that holds tiler's own JSON.
TILER_KEY = "tiler"
#: Deepness's keys (see the module docstring for the source).
DEEPNESS_KEYS = ("model_type", "class_names", "resolution", "tile_size", "tiles_size", "tiles_overlap",
                 "standardization_mean", "standardization_std")
#: The largest input value of a Deepness model: 8-bit RGB(A), which Deepness scales by 1/255 (its docs,
#: ``creators_add_metadata_to_model.rst``, "standardization_mean"/"standardization_std").
DEEPNESS_MAX = 255.0
#: Class colours where a model names none: a qualitative, colour-blind-safe set (Okabe & Ito 2008,
#: "Color Universal Design", https://jfly.uni-koeln.de/color/), then greys.
DEFAULT_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")


def is_onnx(path) -> bool:
    """Whether ``path`` names an ONNX model (by its suffix)."""
    return os.fspath(path).lower().endswith(ONNX_SUFFIX)


def _graph_input(model) -> tuple[str, list]:
    """The graph's one real input (initialisers excluded): name and dims (int, or None where dynamic)."""
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelFileError(f"the ONNX graph has {len(inputs)} inputs; tiler runs networks of one image input")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    return inputs[0].name, dims


def sidecar_template(path: str, dims: list) -> dict:
    """A sidecar JSON for ``path`` with every field tiler needs, to fill in."""
    channels = dims[1] if len(dims) == 4 and dims[1] else 3
    return {
        "channels": ["red", "green", "blue"][:channels] + [f"band{k}" for k in range(4, channels + 1)],
        "classes": ["CLASS_0", "CLASS_1"],
        "colours": list(DEFAULT_COLOURS[:2]),
        "offset": [0.0] * channels, "scale": [1.0] * channels,
        "activation": "softmax", "patch_size": 256, "depth": 0,
        "network": {"format": "onnx", "layout": "NCHW", "output": "probabilities"},
        "inference": {"patch_size": 256, "overlap": 0.125, "window": "spline"},
        "domain": None,
    }


def _from_deepness(props: dict, dims: list, source: str) -> Optional[dict]:
    """tiler's metadata from Deepness's keys, or None where they do not describe a segmentation model."""
    if not any(k in props for k in ("class_names", "names")):
        return None
    loads = json.loads
    if "model_type" in props and str(loads(props["model_type"])).capitalize() != "Segmentor":
        raise ModelFileError(f"{source}: Deepness model_type {loads(props['model_type'])!r}; tiler runs "
                             "segmentation models (Segmentor)")
    raw = props.get("class_names", props.get("names"))
    try:
        names = loads(raw)
    except json.JSONDecodeError:
        names = ast.literal_eval(raw)  # Deepness accepts integer keys written by str(dict)
    classes = [str(v) for _, v in sorted(names.items(), key=lambda kv: int(kv[0]))]
    channels = dims[1] if len(dims) == 4 and dims[1] else None
    if channels != 3:
        return None  # bands cannot be named from Deepness's keys: ask for tiler's own
    mean = [float(v) for v in loads(props["standardization_mean"])] if "standardization_mean" in props else None
    std = [float(v) for v in loads(props["standardization_std"])] if "standardization_std" in props else None
    offset = [255.0 * m for m in (mean or [0.0] * 3)]  # Deepness: ((x / 255) - mean) / std
    scale = [255.0 * s for s in (std or [1.0] * 3)]
    size = props.get("tile_size", props.get("tiles_size"))
    patch = int(loads(size)) if size is not None else (dims[2] or 256)
    overlap = float(loads(props["tiles_overlap"])) / 100.0 if "tiles_overlap" in props else 0.125
    doc = {"channels": ["red", "green", "blue"], "classes": classes,
           "colours": [DEFAULT_COLOURS[k % len(DEFAULT_COLOURS)] for k in range(len(classes))],
           "offset": offset, "scale": scale, "activation": "softmax", "patch_size": patch, "depth": 0,
           "network": {"format": "onnx", "layout": "NCHW", "output": "probabilities", "from": "deepness"},
           "inference": {"patch_size": patch, "overlap": min(overlap, 0.9), "window": "spline"}}
    pixel_size = float(loads(props["resolution"])) / 100.0 if "resolution" in props else None  # cm per pixel
    if pixel_size is not None:
        doc["training"] = {"pixel_size_m": pixel_size}
    # Deepness feeds a raster's first bands as 8-bit values scaled by 1/255: that is the training domain its
    # models are made for, so a 16-bit or reflectance scene is refused as for tiler's own files.
    doc["domain"] = {"channels": [{"name": c, "dtype": "uint8", "low": 0.0, "high": DEEPNESS_MAX}
                                  for c in doc["channels"]], "pixel_size": pixel_size}
    return doc


def _graph_output(model) -> list:
    """The dims of the graph's first output (int, or None where dynamic)."""
    if not model.graph.output:
        raise ModelFileError("the ONNX graph has no output")
    return [d.dim_value if d.HasField("dim_value") else None
            for d in model.graph.output[0].type.tensor_type.shape.dim]


def _check_graph(model, dims: list, layout: str, doc: dict, source: str) -> None:
    """Check the metadata's layout, channels and classes against the graph's input and output shapes.

    Raises
    ------
    ModelFileError
        Naming the graph's shape, what the metadata says and which key to fix.
    """
    channels, classes = len(doc.get("channels", [])), len(doc.get("classes", []))
    axis, other = (1, 3) if layout == "NCHW" else (3, 1)
    shown = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
    if dims[axis] != channels and dims[other] == channels:
        real = "NHWC" if layout == "NCHW" else "NCHW"
        raise ModelFileError(f"{source}: the graph's input is {shown}, {real} with {channels} channels, but the "
                             f"metadata says layout {layout}; set network.layout to {real!r}")
    if dims[axis] and dims[axis] != channels:
        raise ModelFileError(f"{source}: the graph takes {dims[axis]} channels but the metadata names "
                             f"{channels}")
    out = _graph_output(model)
    if len(out) == 4:
        n = out[1] if layout == "NCHW" else out[3]
        if n and n != classes:
            raise ModelFileError(f"{source}: the graph's output has {n} classes (shape "
                                 f"({', '.join('?' if d is None else str(d) for d in out)})) but the metadata "
                                 f"names {classes} ({', '.join(doc.get('classes', []))}); name one class per "
                                 "output channel")


def read_onnx_info(path) -> "Any":
    """The :class:`~tiler.model.ModelInfo` of an ONNX model, from its metadata, a sidecar or Deepness's keys.

    Parameters
    ----------
    path : path-like
        An ``.onnx`` file.

    Returns
    -------
    ModelInfo
        With ``network = {"format": "onnx", "layout", "output", "input"}``.

    Raises
    ------
    ModelFileError
        If the file is missing or not ONNX, has more than one input, or says
        too little: the message lists what is missing and prints a sidecar
        template to fill in.
    """
    import onnx

    from tiler.model._info import ModelInfo

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path!r} does not exist; check --model")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"{path!r} is empty (0 bytes): not an ONNX model; export or copy it again")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and others for a file that is not ONNX
        raise ModelFileError(f"{path!r} is not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node and not model.graph.input:
        raise ModelFileError(f"{path!r} holds an empty ONNX graph (no inputs, no operators): a truncated or "
                             "unfinished file; export or copy it again")
    name, dims = _graph_input(model)
    props = {p.key: p.value for p in model.metadata_props}
    sidecar = path + ".json"
    from tiler.model._mlm import mlm_described

    if TILER_KEY in props:
        text, source = props[TILER_KEY], f"{path!r} (metadata_props['{TILER_KEY}'])"
        doc = json.loads(text)
    elif mlm_described(path) is not None:  # --model item.json: the STAC MLM Item describes this file
        source, doc = f"{path!r} (its STAC MLM Item)", json.loads(json.dumps(mlm_described(path)))
    elif os.path.isfile(sidecar):
        source = repr(sidecar)
        try:
            with open(sidecar, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read the sidecar {sidecar!r}: {exc}") from None
    else:
        from tiler.model._registry import registered_info

        described = registered_info(path)  # a package's file, described by its provider (tiler models)
        if described is not None:
            return described
        source = f"{path!r} (Deepness metadata)"
        doc = _from_deepness(props, dims, source)
    if doc is None:
        template = json.dumps(sidecar_template(path, dims), indent=2)
        raise ModelFileError(
            f"{path!r} does not say what tiler needs to run it (ordered input channels, normalisation, classes "
            f"and colours, softmax/logits output, NCHW/NHWC layout, patch size): it has no '{TILER_KEY}' "
            f"metadata, no sidecar {os.path.basename(sidecar)!r} and no Deepness class_names for a 3-band input. "
            f"Write the sidecar beside it, e.g.:\n{template}")
    network = dict(doc.get("network") or {})
    network.setdefault("format", "onnx")
    network.setdefault("layout", "NCHW")
    network.setdefault("output", "probabilities")
    network["input"] = name
    if network["layout"] not in ("NCHW", "NHWC") or network["output"] not in ("probabilities", "logits"):
        raise ModelFileError(f"{source}: network layout must be NCHW or NHWC and output probabilities or logits, "
                             f"got {network['layout']!r} and {network['output']!r}")
    doc["network"] = network
    doc.setdefault("depth", 0)
    doc.setdefault("activation", "softmax")
    doc.setdefault("colours", [DEFAULT_COLOURS[k % len(DEFAULT_COLOURS)] for k in range(len(doc.get("classes", [])))])
    if len(dims) != 4:
        raise ModelFileError(f"{source}: the input has {len(dims)} dimensions; tiler feeds (batch, channel, row, "
                             "col) or (batch, row, col, channel)")
    _check_graph(model, dims, network["layout"], doc, source)
    sides = dims[2:] if network["layout"] == "NCHW" else dims[1:3]
    if all(sides):  # a graph with fixed sides takes patches of that size only
        network["sides"] = [int(v) for v in sides]
    doc.pop("format", None)
    return ModelInfo.from_json(json.dumps(doc), source=source)


class OnnxRuntime:
    """An ONNX network on batches of one shape: normalisation, layout and activation around it.

    Parameters
    ----------
    path : str
        The ``.onnx`` file.
    info : ModelInfo
        Its metadata (``network`` says layout and output).
    shape : tuple of int
        ``(patch, row, col, channel)`` of every batch, raw channel values.
    engine : {"openvino", "onnxruntime"}
        OpenVINO reads ONNX itself (its CPU plugin); ONNX Runtime runs it with
        the CUDA execution provider where ``onnxruntime-gpu`` has one, else
        on the CPU.
    precision : str
        OpenVINO's inference precision hint (ONNX Runtime runs the graph's own types).

    Notes
    -----
    Takes and gives NCHW, the engine's layout (:attr:`layout`): ``(patch,
    channel, row, col)`` in, ``(patch, class, row, col)`` out. The input is
    normalised on the host (``(x - offset) / scale``) in the graph's input type
    (float16 graphs included) and transposed only for an NHWC graph (its output
    transposed back); logits get their softmax (or sigmoid for a sigmoid model).
    """

    layout = "NCHW"

    def __init__(self, path: str, info, shape: tuple[int, ...], *, engine: str, precision: str = "float32") -> None:
        self.shape, self.precision, self.name = tuple(int(s) for s in shape), precision, engine
        self.network = dict(info.network)
        self._offset = np.asarray(info.offset, np.float32).reshape(1, -1, 1, 1)
        self._inv = (1.0 / np.asarray(info.scale, np.float64)).astype(np.float32).reshape(1, -1, 1, 1)
        self._softmax = info.activation == "softmax"
        patches, height, width, channels = self.shape
        nchw = self.network["layout"] == "NCHW"
        feed = [patches, channels, height, width] if nchw else [patches, height, width, channels]
        try:
            self._run = self._load(path, engine, feed, precision)
        except Exception as exc:  # noqa: BLE001 - the runtimes raise their own types; the message names the fix

            raise PlanError(f"{engine} could not load {path!r} for batches of {feed} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); a graph with fixed sides "
                            "needs its own patch size (--patch-size)") from exc
        self._nchw = nchw

    def _load(self, path: str, engine: str, feed: list, precision: str):
        """The function that runs one batch (in the graph's layout and type) with ``engine``."""
        if engine == "openvino":
            from tiler.model._runtime import cpu_infer, import_openvino

            core = import_openvino().Core()
            model = core.read_model(path)
            model.reshape({model.inputs[0].any_name: feed})
            self._dtype = np.dtype(model.inputs[0].element_type.to_dtype())
            return cpu_infer(core, model, precision)
        import onnxruntime as ort

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        session = ort.InferenceSession(path, providers=providers)
        inp = session.get_inputs()[0]
        self._dtype = np.dtype(np.float16) if "float16" in inp.type else np.dtype(np.float32)

        def run(x):
            return np.asarray(session.run(None, {inp.name: x})[0], np.float32)

        return run

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = ((batch - self._offset) * self._inv).astype(self._dtype, copy=False)
        if not self._nchw:
            x = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
        y = self._run(x)
        if not self._nchw:
            y = np.transpose(y, (0, 3, 1, 2))
        if self.network["output"] == "logits":
            if self._softmax:
                y = y - y.max(axis=1, keepdims=True)
                np.exp(y, out=y)
                y /= y.sum(axis=1, keepdims=True)
            else:
                y = 1.0 / (1.0 + np.exp(-y))
        return np.ascontiguousarray(y, np.float32)

    def __repr__(self) -> str:
        return f"OnnxRuntime({self.name}, {self.shape}, {self.network['layout']}, {self.network['output']})"
