"""ONNX models (issue 25): metadata, sidecar or Deepness keys; run by OpenVINO and ONNX Runtime.

The graph is built here with the ``onnx`` helper API as PyTorch exports one
(NCHW, dynamic batch and size); the oracle is the same arithmetic in NumPy.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import smooth_image, write_tif
from tiler.cli import main
from tiler.errors import ModelFileError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

K = 4
W = np.random.default_rng(0).standard_normal((K, 3, 1, 1)).astype(np.float32)
B = np.linspace(-0.5, 0.5, K).astype(np.float32)
OFFSET, SCALE = [120.0, 110.0, 100.0], [60.0, 55.0, 50.0]
INFO = {"channels": ["red", "green", "blue"], "classes": ["a", "b", "c", "d"],
        "colours": ["#E69F00", "#56B4E9", "#009E73", "#F0E442"], "offset": OFFSET, "scale": SCALE,
        "patch_size": 64, "depth": 0, "network": {"format": "onnx", "layout": "NCHW", "output": "logits"},
        "inference": {"patch_size": 64, "overlap": 0.25, "window": "spline"}}


def _graph(path, *, metadata=None, fp16=False, softmax=False):
    """A 1x1 convolution, 3 channels -> K logits (or their softmax), NCHW with dynamic batch, rows and columns."""
    dtype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    npt = np.float16 if fp16 else np.float32
    x = helper.make_tensor_value_info("input", dtype, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("logits", dtype, ["batch", K, "height", "width"])
    w = helper.make_tensor("w", dtype, W.shape, W.astype(npt).tobytes(), raw=True)
    b = helper.make_tensor("b", dtype, B.shape, B.astype(npt).tobytes(), raw=True)
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["z" if softmax else "logits"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["logits"], axis=1))
    model = helper.make_model(helper.make_graph(nodes, "seg", [x], [y], [w, b]),
                              opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def _oracle(image):
    x = (image.astype(np.float64) - np.asarray(OFFSET)[:, None, None]) / np.asarray(SCALE)[:, None, None]
    logits = np.einsum("kc,crs->krs", W[:, :, 0, 0].astype(np.float64), x) + B[:, None, None]
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("output", ["logits", "probabilities"])
def test_an_onnx_model_with_tiler_metadata_predicts_the_oracle(tmp_path, runtime, output):
    """Through the engine in batches of one patch, and a prediction stays as it was after the next batch
    (a runtime that handed out its reused output buffer would have the engine blend a later batch's values)."""
    pytest.importorskip(runtime)
    from tiler import predict
    from tiler.model import read_info

    info = dict(INFO, network=dict(INFO["network"], output=output))
    path = _graph(tmp_path / "m.onnx", metadata={"tiler": json.dumps(info)}, softmax=output == "probabilities")
    info = read_info(path)
    assert info.is_onnx and info.network["input"] == "input" and info.classes == ("a", "b", "c", "d")
    image = smooth_image(3, 150, 170).astype(np.float32)
    got = predict(image, model=path, runtime=runtime, batch_size=1)
    np.testing.assert_allclose(got, _oracle(image), atol=1e-5)
    # The engine blends a batch while the network computes the next: a prediction must outlive the next call.
    from tiler.model import Predictor, load_model

    predictor = Predictor(load_model(path), batch_size=1, runtime=runtime)
    first = predictor(image[None, :, :64, :64])
    kept = first.copy()
    predictor(image[None, :, 64:128, 64:128])
    np.testing.assert_array_equal(first, kept)


def test_a_sidecar_describes_a_bare_graph_and_a_float16_graph_runs(tmp_path):
    from tiler import predict

    path = _graph(tmp_path / "half.onnx", fp16=True)
    (tmp_path / "half.onnx.json").write_text(json.dumps(INFO))
    image = smooth_image(3, 40, 50).astype(np.float32)
    np.testing.assert_allclose(predict(image, model=path), _oracle(image), atol=5e-3)  # float16 arithmetic


def test_a_graph_without_metadata_is_refused_with_a_template(tmp_path, runner):
    path = _graph(tmp_path / "bare.onnx")
    scene = write_tif(tmp_path / "s.tif", smooth_image(3, 40, 40))
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "m.tif"), "--model", path])
    assert r.exit_code == 2 and "bare.onnx.json" in r.output and '"channels"' in r.output, r.output
    assert not (tmp_path / "m.tif").exists()
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ModelFileError, match="not an ONNX model"):
        from tiler.model import read_info

        read_info(tmp_path / "junk.onnx")


def test_deepness_metadata_is_read(tmp_path):
    """The keys of the Deepness QGIS plugin (values JSON-encoded, as its documentation writes them)."""
    from tiler.model import read_info

    meta = {"model_type": json.dumps("Segmentor"),
            "class_names": json.dumps({0: "background", 1: "field", 2: "road", 3: "water"}),  # the graph's K = 4
            "resolution": json.dumps(50), "tiles_size": json.dumps(256), "tiles_overlap": json.dumps(20),
            "standardization_mean": json.dumps([0.485, 0.456, 0.406]),
            "standardization_std": json.dumps([0.229, 0.224, 0.225])}
    info = read_info(_graph(tmp_path / "d.onnx", metadata=meta))
    assert info.classes == ("background", "field", "road", "water") and info.channels == ("red", "green", "blue")
    assert info.recommended() == (256, 0.2, "spline") and info.network["output"] == "probabilities"
    assert info.offset == pytest.approx((0.485 * 255, 0.456 * 255, 0.406 * 255))
    assert info.scale == pytest.approx((0.229 * 255, 0.224 * 255, 0.225 * 255))


def test_tiler_run_with_an_onnx_model_writes_the_class_map(tmp_path, runner):
    import rasterio

    path = _graph(tmp_path / "m.onnx", metadata={"tiler": json.dumps(INFO)})
    image = smooth_image(3, 120, 100)
    scene = write_tif(tmp_path / "s.tif", image)
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "c.tif"), "--model", path, "--tta", "flip", "-q"])
    assert r.exit_code == 0, r.output
    with rasterio.open(tmp_path / "c.tif") as ds:
        got = ds.read(1)
        assert ds.tags()["TILER_CLASSES"] == "a,b,c,d"
    # A 1x1 network is equivariant under flips: TTA changes nothing, the class is the oracle's argmax.
    expect = _oracle(image.astype(np.float32)).argmax(0)
    assert (got == expect).mean() > 0.999
    r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / "k.tif"), "--model", path, "--runtime", "keras"])
    assert r.exit_code == 2 and "cannot run an ONNX model" in r.output


def test_the_exported_bundled_model_runs_as_the_keras_one(tmp_path, runner):
    """`tiler export`: the ONNX run of the exported bundled model gives the same class on >= 99.9 % of a real
    image's pixels as the .keras run, probabilities within 1e-4; every Deepness key is there, of its type."""
    pytest.importorskip("tf2onnx")
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from tests.conftest import DUBAI
    from tiler import predict
    from tiler.model import DEFAULT_MODEL_PATH, read_info

    r = runner.invoke(main, ["export", str(DEFAULT_MODEL_PATH), "-o", str(tmp_path / "default.onnx")])
    assert r.exit_code == 0, r.output
    model = onnx.load(str(tmp_path / "default.onnx"))
    props = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert props["model_type"] == "Segmentor" and isinstance(props["class_names"], dict)
    assert isinstance(props["tiles_size"], int) and isinstance(props["tiles_overlap"], (int, float))
    patch, overlap, _ = read_info(DEFAULT_MODEL_PATH).recommended()  # the overlap in pixels round-trips exactly
    assert round(props["tiles_overlap"] / 100 * patch) == round(overlap * patch)
    assert len(props["standardization_mean"]) == len(props["standardization_std"]) == 3
    assert all(isinstance(v, float) for v in props["standardization_mean"] + props["standardization_std"])
    keras_info, onnx_info = read_info(DEFAULT_MODEL_PATH), read_info(tmp_path / "default.onnx")
    assert onnx_info.is_onnx and onnx_info.classes == keras_info.classes
    assert onnx_info.recommended() == keras_info.recommended()
    image_path = DUBAI / "tile_7" / "images" / "image_part_003.jpg"
    if image_path.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(image_path) as ds:
                image = ds.read(window=rasterio.windows.Window(0, 0, 640, 512)).astype(np.float32)
    else:  # no shared data here: the bundled sample
        from pathlib import Path

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(Path(__file__).resolve().parents[1] / "examples" / "dubai_sample.tif") as ds:
                image = ds.read(window=rasterio.windows.Window(0, 0, 640, 512)).astype(np.float32)
    a = predict(image, model=DEFAULT_MODEL_PATH, runtime="keras")
    b = predict(image, model=tmp_path / "default.onnx")
    assert (a.argmax(0) == b.argmax(0)).mean() >= 0.999
    np.testing.assert_allclose(a, b, atol=1e-4)
    r = runner.invoke(main, ["export", str(DEFAULT_MODEL_PATH), "-o", str(tmp_path / "default.onnx")])
    assert r.exit_code == 2 and "--overwrite" in r.output
