"""The U-Net builder, the model file, losses and class schemes."""

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from tiler.errors import ModelFileError, PlanError
from tiler.labels import IGNORE
from tiler.model import (
    METADATA_NAME,
    DiceCrossEntropy,
    build_unet,
    load_model,
    read_info,
    soft_dice_loss,
    soft_jaccard_loss,
)
from tiler.model._losses import cross_entropy_loss

PACKAGE = Path(__file__).resolve().parents[1] / "tiler"


@pytest.mark.parametrize("depth,patch", [(1, 8), (2, 12), (3, 24)])
def test_unet_shapes_and_probabilities(depth, patch):
    net = build_unet(4, 3, depth=depth, base_filters=4)
    x = np.random.default_rng(0).random((2, patch, patch, 4)).astype(np.float32)
    y = np.asarray(net.predict_on_batch(x))
    assert y.shape == (2, patch, patch, 3) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-5)


def test_unet_sigmoid_is_multilabel():
    """Sigmoid outputs are each the logistic of the last layer's logits: they do not sum to 1 per pixel as
    softmax's do (a softmax network passes the old check, values in (0, 1), as well)."""
    keras.utils.set_random_seed(1)  # the initial weights: the same network on every backend and every run
    x = np.random.default_rng(1).random((1, 8, 8, 1)).astype(np.float32) * 4
    sigmoid = build_unet(1, 3, depth=1, base_filters=2, activation="sigmoid")
    y = np.asarray(sigmoid.predict_on_batch(x))
    # Closed interval: float32's logistic is exactly 1.0 for logits above ~17.3 (1 - 2**-25 rounds up), as
    # JAX's unseeded weights once gave; the oracle below holds the values to the logistic of the logits.
    assert np.all((y >= 0) & (y <= 1))
    assert np.abs(y.sum(-1) - 1.0).max() > 1e-2
    head = sigmoid.get_layer("probabilities")  # a 1x1 convolution: logits = features @ kernel + bias
    features = np.asarray(keras.Model(sigmoid.input, head.input).predict_on_batch(x))
    kernel, bias = (np.asarray(w) for w in head.get_weights())
    logits = features @ kernel[0, 0] + bias
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-logits)), atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(depth=0), "depth must be in 1..6"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(activation="relu"), "activation must be"),
])
def test_unet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(PlanError, match=match):
        build_unet(3, 2, **kwargs)


def test_no_tensorflow_calls_in_the_package():
    # Models must run under the JAX and PyTorch backends too: keras.ops only.
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "import tensorflow" not in text and "tf." not in text, path


def test_model_file_round_trip(tiny_model):
    tm = load_model(tiny_model)
    assert tm.info.channels == ("red", "green", "blue")
    assert tm.info.classes == ("a", "b", "c")
    assert tm.info.offset == (100.0, 100.0, 100.0) and tm.info.scale == (50.0, 50.0, 50.0)
    assert tm.info.patch_size == 32 and tm.info.depth == 2
    with zipfile.ZipFile(tiny_model) as zf:
        assert METADATA_NAME in zf.namelist()
        doc = json.loads(zf.read(METADATA_NAME))
    assert doc["tiler_version"] and doc["activation"] == "softmax"
    # The file stays a plain Keras model for any Keras program.
    plain = keras.saving.load_model(tiny_model, compile=False)
    assert plain.count_params() == tm.keras_model.count_params()


def test_plain_keras_file_is_not_a_tiler_model(tmp_path):
    net = build_unet(3, 2, depth=1, base_filters=2)
    path = tmp_path / "plain.keras"
    net.save(path)
    with pytest.raises(ModelFileError, match="Keras model without tiler metadata"):
        load_model(path)


def test_random_file_is_not_a_tiler_model(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match="not a tiler model"):
        read_info(path)
    with pytest.raises(ModelFileError, match="does not exist"):
        read_info(tmp_path / "missing.keras")


def test_default_model_ships_with_the_package():
    info = read_info(PACKAGE / "model" / "default.keras")
    assert info.channels == ("red", "green", "blue")
    assert info.classes == ("building", "land", "road", "vegetation", "water")
    # A pretrained encoder's U-Net (EfficientNet-Lite0, 5.4 M parameters in float32): 22 MB; the wheel stays small.
    assert (PACKAGE / "model" / "default.keras").stat().st_size < 30 * 2**20






# ---------------------------------------------------------------- losses

def _np_losses(y, p):
    """Hand NumPy version of the loss definitions (the oracle)."""
    k = p.shape[-1]
    valid = y != IGNORE
    onehot = np.eye(k)[np.where(valid, y, 0)] * valid[..., None]
    pm = p * valid[..., None]
    inter = (pm * onehot).sum((0, 1, 2))
    ps, ts = pm.sum((0, 1, 2)), onehot.sum((0, 1, 2))
    dice = 1 - np.mean((2 * inter + 1) / (ps + ts + 1))
    jac = 1 - np.mean((inter + 1) / (ps + ts - inter + 1))
    ce = -(onehot * np.log(np.clip(p, 1e-7, 1))).sum() / valid.sum()
    return dice, jac, ce


def test_losses_match_hand_computation_and_ignore_unlabelled():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, (2, 5, 6)).astype(np.uint8)
    y[0, :2] = IGNORE
    logits = rng.normal(size=(2, 5, 6, 3))
    p = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    dice, jac, ce = _np_losses(y, p)
    assert float(soft_dice_loss(y, p)) == pytest.approx(dice, rel=1e-5)
    assert float(soft_jaccard_loss(y, p)) == pytest.approx(jac, rel=1e-5)
    assert float(cross_entropy_loss(y, p)) == pytest.approx(ce, rel=1e-5)
    assert float(DiceCrossEntropy(0.5)(y, p)) == pytest.approx(ce + 0.5 * dice, rel=1e-5)
    from tiler.model._losses import JaccardCrossEntropy

    assert float(JaccardCrossEntropy(0.5)(y, p)) == pytest.approx(ce + 0.5 * jac, rel=1e-5)
    assert JaccardCrossEntropy.from_config(JaccardCrossEntropy(0.25).get_config()).jaccard_weight == 0.25
    # Changing the prediction at ignored pixels changes nothing.
    p2 = p.copy()
    p2[0, :2] = np.roll(p2[0, :2], 1, axis=-1)
    assert float(DiceCrossEntropy()(y, p2)) == pytest.approx(float(DiceCrossEntropy()(y, p)), rel=1e-6)


def test_unet_takes_the_searched_initialisations_and_refuses_others():
    import keras

    from tiler.errors import PlanError
    from tiler.model import build_unet

    for name, cls in (("glorot_uniform", keras.initializers.GlorotUniform),
                      ("he_uniform", keras.initializers.HeUniform)):
        net = build_unet(3, 2, depth=1, base_filters=4, kernel_initializer=name, batch_norm=False)
        convs = [layer for layer in net.layers if layer.name.endswith("_conv1")]
        assert convs and all(isinstance(layer.kernel_initializer, cls) for layer in convs)
        assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in net.layers)
    with pytest.raises(PlanError, match="kernel initializer"):
        build_unet(3, 2, kernel_initializer="zeros")


def test_perfect_prediction_has_zero_dice_loss():
    y = np.array([[[0, 1], [2, 1]]], np.uint8)
    p = np.eye(3, dtype=np.float32)[y]
    assert float(soft_dice_loss(y, p)) == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- class schemes





def test_model_recommended_inference_settings_are_the_run_defaults(tmp_path, tiny_model):
    """A model file's recommended patch, overlap and window are what `tiler run` uses unless told otherwise."""
    import shutil

    from tests.conftest import smooth_image, write_tif
    from tiler.model import read_info, update_info
    from tiler.pipeline import run_scene

    model = tmp_path / "rec.keras"
    shutil.copy(tiny_model, model)
    assert read_info(model).recommended() == (32, 0.5, "spline")  # nothing recorded: training patch, 0.5, spline
    update_info(model, inference={"patch_size": 64, "overlap": 0.25, "window": "hann"})
    assert read_info(model).recommended() == (64, 0.25, "hann")
    scene = write_tif(tmp_path / "s.tif", smooth_image(3, 100, 130))
    rep = run_scene(scene, tmp_path / "a.tif", model=str(model))
    assert (rep.grid["patch_size"], rep.grid["stride"]) == (64, 48)
    assert rep.options["inference"]["window"] == "hann" and rep.options["inference"]["overlap"] == 0.25
    assert 0 < rep.network_busy < 1 and rep.to_dict()["network_busy"] == rep.network_busy
    rep = run_scene(scene, tmp_path / "b.tif", model=str(model), overlap=0.5, patch_size=32, window="spline")
    assert (rep.grid["patch_size"], rep.grid["stride"]) == (32, 16)
    assert rep.options["inference"]["window"] == "spline"
    for bad, match in [({"patch_size": 30}, "multiple of 2\\*\\*depth"), ({"overlap": 1.0}, "fraction"),
                       ({"window": "square"}, "window"), ({"stride": 8}, "unknown key")]:
        with pytest.raises(ModelFileError, match=match):
            update_info(model, inference=bad)


def test_predictor_sends_one_batch_shape_and_padding_changes_nothing(tiny_model):
    """The last, smaller batch is padded: the backend never sees a new shape (no re-trace), and each
    patch's probabilities equal those of the patch predicted alone."""
    from tiler.model import Predictor, load_model

    tm = load_model(tiny_model)
    patches = np.random.default_rng(3).uniform(0, 255, (7, 3, 32, 32)).astype(np.float32)
    pred = Predictor(tm, batch_size=4, runtime="keras")
    shapes = []
    net = pred._network("float32")
    inner = net.predict_on_batch
    net.predict_on_batch = lambda x: (shapes.append(x.shape), inner(x))[1]
    got = pred(patches)
    assert got.shape == (7, 3, 32, 32) and set(shapes) == {(4, 32, 32, 3)}
    assert list(pred._runtimes) == [(4, 32, 32, 3)]  # one runtime, built once, for every runtime choice
    alone = np.concatenate([Predictor(tm, batch_size=1, runtime="keras")(p[None]) for p in patches])
    np.testing.assert_allclose(got, alone, atol=1e-5)


def test_nothing_below_training_imports_it_and_model_does_not_import_the_pipeline():
    """The layering of DESIGN.md: training sits above the pipeline, the model below it."""
    import ast

    root = Path(__file__).resolve().parents[1] / "tiler"

    def imported(path):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return names

    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("training/", "cli/")):
            continue
        assert not any(n.startswith("tiler.training") for n in imported(path)), rel
        if rel.startswith("model/"):
            assert not any(n.startswith(("tiler.pipeline", "tiler.engine", "tiler.sinks")) for n in imported(path)), rel


