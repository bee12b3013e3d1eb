"""Writing a tiler model as ONNX, with tiler's metadata and the Deepness QGIS plugin's keys.

The network is exported by Keras (``Model.export(format="onnx")``, which uses
tf2onnx under the TensorFlow backend) behind a transpose, so that the graph
takes and gives NCHW tensors as PyTorch exports do and as Deepness feeds them.
The ONNX file then carries, in ``metadata_props``:

* ``tiler``: the model's :class:`~tiler.model.ModelInfo` as JSON, with
  ``network = {"format": "onnx", "layout": "NCHW", "output": "probabilities"}``
  (read back by :func:`tiler.model._onnx.read_onnx_info`);
* Deepness's keys (PUTvision/qgis-plugin-deepness,
  ``docs/source/creators/creators_add_metadata_to_model.rst`` and
  ``src/deepness/processing/models/model_base.py``), JSON-encoded as its
  documentation writes them: ``model_type`` ``"Segmentor"``, ``class_names``
  ``{"0": name, ...}``, ``tiles_size`` and ``tile_size`` (the docs' and the
  code's spelling), ``tiles_overlap`` in percent, ``standardization_mean`` and
  ``standardization_std`` (Deepness divides the 0-255 input by 255 first, so
  they are tiler's offset and scale over 255), and ``resolution`` in cm per
  pixel where the model records its pixel size.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Union

from tiler._logging import quiet_stderr
from tiler.errors import ModelFileError, UsageError

__all__ = ["export_onnx", "deepness_metadata"]


def _overlap_percent(patch: int, overlap: float) -> float:
    """The overlap in percent of the patch that gives back the same overlap in pixels.

    tiler overlaps ``round(overlap * patch)`` pixels; an integer percent can lose one (12 % of 192 px is 23 px,
    not the 24 of 0.125), so the exact percentage of those pixels is written (``12.5``), an integer where
    it is one.
    """
    pixels = int(round(overlap * patch))
    percent = round(100.0 * pixels / patch, 6)
    return int(percent) if percent == int(percent) else percent


def deepness_metadata(info) -> dict[str, str]:
    """Deepness's metadata keys for a model, values JSON-encoded (see the module docstring)."""
    patch, overlap, _ = info.recommended()
    meta = {
        "model_type": json.dumps("Segmentor"),
        "class_names": json.dumps({str(i): n for i, n in enumerate(info.classes)}),
        "tiles_size": json.dumps(int(patch)),
        "tile_size": json.dumps(int(patch)),
        "tiles_overlap": json.dumps(_overlap_percent(int(patch), overlap)),
        "standardization_mean": json.dumps([float(v) / 255.0 for v in info.offset]),
        "standardization_std": json.dumps([float(v) / 255.0 for v in info.scale]),
    }
    domain = info.input_domain
    if domain is not None and domain.pixel_size is not None:
        meta["resolution"] = json.dumps(round(domain.pixel_size * 100.0, 4))
    return meta


def export_onnx(model: Union[str, os.PathLike], out, *, overwrite: bool = False) -> dict:
    """Write a ``.keras`` tiler model as an ONNX file that tiler and Deepness run.

    Parameters
    ----------
    model : path-like
        A tiler ``.keras`` model file.
    out : path-like or Destination
        The ``.onnx`` file; written to a temporary name and renamed into place.
    overwrite : bool, default False

    Returns
    -------
    dict
        ``out``, ``input`` and ``output`` names and shapes, ``metadata`` keys.

    Raises
    ------
    ModelFileError
        If the model file is not a Keras tiler model (an ONNX one is one already).
    UsageError
        If the exporter (tf2onnx, under Keras's TensorFlow backend) is not available.
    """
    from tiler.destination import Destination
    from tiler.model._backend import import_keras
    from tiler.model._file import load_model

    tm = load_model(model)
    if tm.info.is_onnx:
        raise ModelFileError(f"{os.fspath(model)!r} is an ONNX model already")
    keras = import_keras()
    if keras.backend.backend() != "tensorflow":
        raise UsageError(f"tiler export needs Keras's TensorFlow backend (tf2onnx); this is "
                         f"{keras.backend.backend()}: run it with KERAS_BACKEND=tensorflow")
    try:
        import onnx
        import tf2onnx  # noqa: F401 - Keras's ONNX export calls it
    except ImportError:
        raise UsageError('tiler export needs tf2onnx: pip install "satellite-tiler[export]"') from None
    net = tm.keras_model
    channels = len(tm.info.channels)
    inp = keras.Input(shape=(channels, None, None), name="input")
    x = keras.layers.Permute((2, 3, 1), name="to_nhwc")(inp)
    y = net(x)
    outp = keras.layers.Permute((3, 1, 2), name="probabilities_nchw")(y)
    nchw = keras.Model(inp, outp, name=f"{net.name}_nchw")
    nchw.predict(keras.ops.zeros((1, channels, 32, 32)), verbose=0)  # Keras exports models that have run
    dest = Destination.coerce(out, overwrite=overwrite)
    with tempfile.TemporaryDirectory(dir=dest.folder) as tmp, warnings.catch_warnings():
        # Keras's tf2onnx shim probes ``np.object`` (a FutureWarning of NumPy's, not ours).
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = os.path.join(tmp, "raw.onnx")
        with quiet_stderr():
            nchw.export(raw, format="onnx", verbose=False)
        graph = onnx.load(raw)
    doc = json.loads(tm.info.to_json())
    doc.pop("format", None)
    doc["network"] = {"format": "onnx", "layout": "NCHW", "output": "probabilities"}
    metadata = {"tiler": json.dumps(doc), **deepness_metadata(tm.info)}
    del graph.metadata_props[:]
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name = "tiler"
    for value in (graph.graph.input[0], graph.graph.output[0]):  # tf2onnx names dynamic axes unk__1494: say what
        for dim, name in zip(value.type.tensor_type.shape.dim, ("batch", None, "height", "width")):
            if name and not dim.HasField("dim_value"):
                dim.dim_param = name
    with dest.writing() as tmp_path:
        onnx.save(graph, tmp_path)
    shape = [[d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in (graph.graph.input[0],
                                                                                         graph.graph.output[0])]
    return {"out": dest.location, "input": {"name": graph.graph.input[0].name, "shape": shape[0]},
            "output": {"name": graph.graph.output[0].name, "shape": shape[1]}, "metadata": sorted(metadata)}
