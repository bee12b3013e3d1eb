"""Models described by the STAC Machine Learning Model extension (MLM): tiler's model contract as MLM, and back.

The contract a tiler model file carries (:class:`~tiler.model.ModelInfo`: ordered input channels, the
normalisation ``(x - offset) / scale`` per channel, the output classes with their colours, the patch
size, the tensor layout) maps one to one onto MLM v1.5.2 fields: ``mlm:input[0].bands`` are the
channels, its ``value_scaling`` one ``z-score`` per channel (``mean = offset``, ``stddev = scale``),
its ``input.shape``/``dim_order`` the patch and layout; ``mlm:output[0].classification:classes`` the
classes (``value`` the index written in the class map, ``color_hint`` the colour). The model file is
the Item's asset with the ``mlm:model`` role.

References
----------
STAC Machine Learning Model extension v1.5.2, https://github.com/stac-extensions/mlm (fields, value
scaling objects); classification extension v1.1.0, https://github.com/stac-extensions/classification.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any, Optional

from tiler.errors import ModelFileError
from tiler.model._info import ModelInfo

__all__ = ["MLM_SCHEMA", "RASTER_SCHEMA", "classification_classes", "mlm_properties", "model_asset", "mlm_item",
           "is_mlm_item", "info_from_mlm", "model_from_mlm", "mlm_described"]

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.5.2/schema.json"
RASTER_SCHEMA = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"

#: Models whose file does not describe itself, described by an MLM Item this process read (real path -> info).
_DESCRIBED: dict[str, dict] = {}


def classification_classes(info: ModelInfo) -> list[dict]:
    """A model's classes as STAC ``classification:classes`` (classification extension v1.1.0): ``value`` the
    index written in the class map, ``name``, ``description`` and ``color_hint`` (``RRGGBB``)."""
    return [{"value": i, "name": name.replace(" ", "_"), "description": name,
             "color_hint": colour.lstrip("#").upper()}
            for i, (name, colour) in enumerate(zip(info.classes, info.colours))]


def mlm_properties(info: ModelInfo, name: str) -> dict:
    """The MLM fields describing a tiler model: architecture, input bands, normalisation, patch size, classes.

    Parameters
    ----------
    info : ModelInfo
    name : str
        ``mlm:name``.

    Returns
    -------
    dict
        ``mlm:name``, ``mlm:architecture`` (U-Net), ``mlm:tasks`` (semantic segmentation),
        ``mlm:framework``, ``mlm:batch_size_suggestion``, ``mlm:input`` (``(batch, height, width,
        bands)`` float32 patches, or ``(batch, bands, height, width)`` for an NCHW ONNX network, with a
        ``z-score`` value scaling per band) and ``mlm:output`` (one probability per class, with
        ``classification:classes``).
    """
    onnx = info.is_onnx
    layout = (info.network or {}).get("layout", "NHWC") if onnx else "NHWC"
    size = int(info.patch_size)
    if layout == "NCHW":
        shape_in, order_in = [-1, len(info.channels), size, size], ["batch", "bands", "height", "width"]
        shape_out, order_out = [-1, len(info.classes), size, size], ["batch", "class", "height", "width"]
    else:
        shape_in, order_in = [-1, size, size, len(info.channels)], ["batch", "height", "width", "bands"]
        shape_out, order_out = [-1, size, size, len(info.classes)], ["batch", "height", "width", "class"]
    return {
        "mlm:name": name,
        "mlm:architecture": "U-Net",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "ONNX" if onnx else "Keras",
        "mlm:batch_size_suggestion": 8,
        "mlm:input": [{
            "name": "patch",
            "bands": list(info.channels),
            "input": {"shape": shape_in, "dim_order": order_in, "data_type": "float32"},
            "value_scaling": [{"type": "z-score", "mean": float(o), "stddev": float(s)}
                              for o, s in zip(info.offset, info.scale)],
            "resize_type": None,
        }],
        "mlm:output": [{
            "name": "classes",
            "tasks": ["semantic-segmentation"],
            "result": {"shape": shape_out, "dim_order": order_out, "data_type": "float32"},
            "classification:classes": classification_classes(info),
        }],
    }


def model_asset(model_href: str, info: ModelInfo) -> dict:
    """The asset of the model file (role ``mlm:model``), its input bands named in ``raster:bands`` as MLM asks."""
    return {"href": model_href, "title": "the model file",
            "type": "application/octet-stream; application=onnx" if info.is_onnx else "application/octet-stream",
            "roles": ["mlm:model"],
            "mlm:artifact_type": "onnx" if info.is_onnx else "keras.Model.save",
            "raster:bands": [{"name": c, "data_type": "float32"} for c in info.channels]}


def mlm_item(info: ModelInfo, model_href: str, *, name: str, item_id: Optional[str] = None) -> dict:
    """A STAC Item (1.1.0) describing a model with MLM: what ``tiler export --mlm`` writes.

    Parameters
    ----------
    info : ModelInfo
    model_href : str
        The model file, relative to the Item (``./m.onnx``) or absolute.
    name : str
        ``mlm:name``.
    item_id : str, optional
        Default ``name``.

    Returns
    -------
    dict
        JSON-ready; no geometry (a model is not of a place), ``datetime`` the time it was written;
        ``tiler:inference`` (the recommended patch size, overlap and window) and ``tiler:domain`` (the
        training input domain), which MLM has no fields for, so that a file without its own description
        runs from the Item as it would from its metadata.
    """
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    props = {"datetime": now, "title": f"{name}: {', '.join(info.classes)} from {', '.join(info.channels)}",
             **mlm_properties(info, name)}
    if info.inference:  # the patch, overlap and window the model recommends for inference (no MLM field)
        props["tiler:inference"] = dict(info.inference)
    if info.domain:  # the training domain the input-domain check compares a scene with
        props["tiler:domain"] = dict(info.domain)
    if info.domain and info.domain.get("pixel_size_m"):
        props["gsd"] = float(info.domain["pixel_size_m"])
    return {"type": "Feature", "stac_version": "1.1.0", "stac_extensions": [MLM_SCHEMA, RASTER_SCHEMA],
            "id": item_id or name, "geometry": None, "properties": props, "links": [],
            "assets": {"model": model_asset(model_href, info)}}


def is_mlm_item(path: str) -> bool:
    """Whether ``path`` is a local JSON file holding a STAC Item with MLM fields (cheap: reads the file)."""
    if not (isinstance(path, str) and path.lower().endswith(".json") and os.path.isfile(path)):
        return False
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "Feature" and "mlm:input" in doc.get("properties", {})


def _band_name(band: Any) -> str:
    return band if isinstance(band, str) else str(band.get("name"))


def info_from_mlm(doc: dict, source: str) -> dict:
    """The model contract an MLM Item states: channels, offset, scale, classes, colours, patch size, layout.

    Parameters
    ----------
    doc : dict
        The Item.
    source : str
        Its path, for messages.

    Returns
    -------
    dict
        ``channels``, ``offset``, ``scale``, ``classes``, ``colours`` (``"#RRGGBB"``, None where the Item
        gives no ``color_hint``), ``patch_size`` (or None where the shape leaves it open), ``layout``
        (``NHWC`` or ``NCHW``).

    Raises
    ------
    ModelFileError
        Not one input and one output, a value scaling tiler cannot apply (only ``z-score``, ``min-max``,
        ``scale`` and none), no classes.
    """
    props = doc.get("properties", {})
    inputs, outputs = props.get("mlm:input") or [], props.get("mlm:output") or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelFileError(f"{source}: tiler runs models with one input and one output; this MLM Item has "
                             f"{len(inputs)} and {len(outputs)}")
    inp, out = inputs[0], outputs[0]
    channels = [_band_name(b).lower() for b in inp.get("bands") or []]
    if not channels:
        raise ModelFileError(f"{source}: mlm:input names no bands; tiler maps scene bands to the model by name")
    scaling = inp.get("value_scaling") or []
    if len(scaling) == 1 and len(channels) > 1:
        scaling = scaling * len(channels)
    offset, scale = [], []
    for k, s in enumerate(scaling or [None] * len(channels)):
        kind = (s or {}).get("type")
        if s is None:
            offset.append(0.0)
            scale.append(1.0)
        elif kind == "z-score":
            offset.append(float(s["mean"]))
            scale.append(float(s["stddev"]))
        elif kind == "min-max":
            offset.append(float(s["minimum"]))
            scale.append(float(s["maximum"]) - float(s["minimum"]))
        elif kind == "scale":
            offset.append(0.0)
            scale.append(1.0 / float(s["value"]))
        else:
            raise ModelFileError(f"{source}: value scaling {kind!r} of band {channels[k]!r} is not one tiler applies "
                                 "(z-score, min-max, scale or none)")
    if len(offset) != len(channels):
        raise ModelFileError(f"{source}: {len(scaling)} value scaling entries for {len(channels)} bands")
    classes = sorted(out.get("classification:classes") or [], key=lambda c: c.get("value", 0))
    if not classes:
        raise ModelFileError(f"{source}: mlm:output has no classification:classes; tiler writes a class map")
    order = inp.get("input", {}).get("dim_order") or []
    shape = inp.get("input", {}).get("shape") or []
    layout = "NCHW" if ("bands" in order and "height" in order and order.index("bands") < order.index("height")) \
        else "NHWC"
    size = None
    if "height" in order and len(shape) == len(order) and int(shape[order.index("height")]) > 0:
        size = int(shape[order.index("height")])
    return {"channels": channels, "offset": offset, "scale": scale,
            "classes": [str(c.get("description") or c["name"]) for c in classes],
            "colours": ["#" + c["color_hint"].lstrip("#").upper() if c.get("color_hint") else None for c in classes],
            "patch_size": size, "layout": layout}


def model_from_mlm(path: str) -> str:
    """The model file an MLM Item describes, checked against it: what ``--model item.json`` runs.

    The file is the Item's asset with the ``mlm:model`` role (a relative href is relative to the Item).
    Where the file describes itself (a tiler ``.keras`` or ONNX model), its channels, normalisation and
    classes must be the Item's; where it does not (an ONNX network from elsewhere), the Item's
    description is used for it in this process.

    Parameters
    ----------
    path : str
        The Item's JSON file.

    Returns
    -------
    str
        The model file's path.

    Raises
    ------
    ModelFileError
        No ``mlm:model`` asset, an asset at a URL (tiler downloads no model: download it and point the
        href at the file), a missing file, or a file whose own description contradicts the Item's.
    """
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    assets = [a for a in doc.get("assets", {}).values() if "mlm:model" in (a.get("roles") or ())]
    if not assets:
        raise ModelFileError(f"MLM Item {path!r} has no asset with the role mlm:model; it must name the model file")
    href = assets[0]["href"]
    if "://" in href and not href.startswith("file://"):
        raise ModelFileError(f"MLM Item {path!r}: the model is at {href}; tiler downloads no model at run time: "
                             "download it and point the asset's href at the local file")
    href = href[len("file://"):] if href.startswith("file://") else href
    model = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), href))
    if not os.path.isfile(model):
        raise ModelFileError(f"MLM Item {path!r}: its model file {model!r} does not exist")
    stated = info_from_mlm(doc, repr(path))
    from tiler.model import read_info  # the package's name: _file reads ONNX through _onnx, which reads _DESCRIBED

    try:
        own = read_info(model)
    except ModelFileError:
        if not model.lower().endswith(".onnx"):
            raise
        own = None
    if own is None:  # an ONNX network from elsewhere: the Item is its description (as a sidecar would be)
        _DESCRIBED[os.path.realpath(model)] = _describe(stated, doc)
        read_info(model)  # checked now against the graph (channels, classes, layout), not at the first batch
        return model
    problems = []
    if list(own.channels) != stated["channels"]:
        problems.append(f"bands {stated['channels']} != the file's channels {list(own.channels)}")
    if list(own.classes) != stated["classes"]:
        problems.append(f"classes {stated['classes']} != the file's {list(own.classes)}")
    if any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(stated["offset"] + stated["scale"],
                                                                    list(own.offset) + list(own.scale))):
        problems.append("value scaling != the file's normalisation (offset, scale)")
    if problems:
        raise ModelFileError(f"MLM Item {path!r} contradicts its model file {model!r}: {'; '.join(problems)}; fix "
                             "the Item (tiler export --mlm writes a matching one)")
    return model


def _describe(stated: dict, doc: dict) -> dict:
    """The description (a sidecar's fields, :func:`tiler.model._onnx.read_onnx_info`) of an ONNX file that
    has none, from its MLM Item."""
    colours = {"colours": stated["colours"]} if all(stated["colours"]) else {}  # else tiler's default palette
    return {"channels": stated["channels"], "classes": stated["classes"], **colours,
            "offset": stated["offset"], "scale": stated["scale"], "patch_size": stated["patch_size"] or 256,
            "network": {"format": "onnx", "layout": stated["layout"], "output": "probabilities"},
            "training": {"described_by": "STAC MLM Item", "mlm:name": doc["properties"].get("mlm:name")},
            **{k: doc["properties"][f"tiler:{k}"] for k in ("inference", "domain")
               if f"tiler:{k}" in doc["properties"]}}


def mlm_described(path) -> Optional[dict]:
    """The description an MLM Item read in this process gave of ``path`` (an ONNX file without one), or None."""
    return _DESCRIBED.get(os.path.realpath(os.fspath(path)))
