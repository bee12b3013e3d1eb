"""Test-time augmentation: each dihedral transform undone exactly."""

import numpy as np
import pytest

import tiler
from tests.conftest import smooth_image
from tests.reference import build_tiny_unet, d4_twin, d4_untwin, mix_expected
from tiler.cli import main
from tiler.config import InferenceConfig
from tiler.errors import ModelFileError, UsageError
from tiler.model import Predictor, load_model, read_info


def _symmetric_conv_model(path):
    """A 3x3 convolution whose kernels are D4-symmetric: the model is D4-equivariant."""
    import keras

    from tiler.model import save_model

    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(3, 3, 2)).astype(np.float32)  # (value, in, out) per position class
    kernel = np.empty((3, 3, 3, 2), np.float32)
    for i in range(3):
        for j in range(3):
            ring = (i != 1) + (j != 1)  # 0 centre, 1 edge, 2 corner: invariant under D4
            kernel[i, j] = (c, b, a)[ring]
    inp = keras.Input(shape=(None, None, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", activation="softmax")
    net = keras.Model(inp, conv(inp))
    conv.set_weights([kernel, np.array([0.1, -0.1], np.float32)])
    save_model(net, path, channels=("red", "green", "blue"), classes=("p", "q"), colours=("#FF0000", "#0000FF"),
               normalization={"offset": [100.0] * 3, "scale": [40.0] * 3}, patch_size=16, depth=0)
    return str(path)


@pytest.fixture(scope="module")
def equivariant_model(tmp_path_factory):
    return _symmetric_conv_model(tmp_path_factory.mktemp("eq") / "sym.keras")


@pytest.mark.parametrize("tta", ["flip", "d4"])
@pytest.mark.parametrize("device", ["graph", "host"])
def test_equivariant_model_gives_the_same_result_with_and_without_tta(equivariant_model, tta, device):
    img = smooth_image(3, 70, 53, seed=4)
    plain = tiler.predict(img, model=equivariant_model, patch_size=16, overlap=0.5)
    augmented = tiler.predict(img, model=equivariant_model, patch_size=16, overlap=0.5, tta=tta,
                              tta_device=device)
    np.testing.assert_allclose(augmented, plain, atol=1e-5)


@pytest.mark.parametrize("device", ["graph", "host"])
@pytest.mark.parametrize("mean", ["arithmetic", "geometric"])
def test_d4_equals_the_mean_of_8_naively_untransformed_predictions(tiny_model, device, mean):
    tm = load_model(tiny_model)
    rng = np.random.default_rng(0)
    batch = (rng.random((5, 3, 32, 32)) * 200).astype(np.float32)
    got = Predictor(tm, batch_size=2, tta="d4", tta_mean=mean, tta_device=device)(batch)
    plain = Predictor(tm, batch_size=5)
    undone = np.stack([d4_untwin(plain(d4_twin(batch, t)), t) for t in range(8)]).astype(np.float64)
    if mean == "arithmetic":
        expected = undone.mean(axis=0)
    else:
        expected = np.exp(np.log(np.maximum(undone, 1e-7)).mean(axis=0))
        expected /= expected.sum(axis=1, keepdims=True)  # softmax model: renormalised
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # the tiny U-Net is not D4-invariant: TTA really changes its output
    assert np.abs(got - plain(batch)).max() > 1e-3


def test_host_and_graph_tta_agree(tiny_model):
    img = smooth_image(3, 45, 61, seed=9)
    graph = tiler.predict(img, model=tiny_model, tta="d4", tta_device="graph")
    host = tiler.predict(img, model=tiny_model, tta="d4", tta_device="host")
    np.testing.assert_allclose(graph, host, atol=1e-5)


def test_tta_run_streamed_equals_in_memory(tmp_path, tif, tiny_model):
    import rasterio

    img = smooth_image(3, 90, 75, seed=2)
    out = tmp_path / "p.tif"
    tiler.run_scene(tif(img), out, model=tiny_model, output="probability", tta="d4", strip_rows=8)
    with rasterio.open(out) as ds:
        streamed = ds.read()
    np.testing.assert_allclose(streamed, tiler.predict(img, model=tiny_model, tta="d4"), atol=1e-5)


def test_pointwise_model_is_unchanged_by_d4(mix_model):
    img = smooth_image(3, 33, 47, seed=1)
    got = tiler.predict(img, model=mix_model, patch_size=16, tta="d4", tta_device="host")
    np.testing.assert_allclose(got, mix_expected(img), atol=1e-5)


def _probabilities(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(), ds.tags()


def test_quality_best_is_the_models_own_tta_else_d4_and_explicit_options_win(tmp_path, tif, tiny_model, runner):
    """``--quality best`` runs what its explicit options run (the oracle): D4 with the arithmetic mean for a
    model that records nothing, the model's own ``inference["best"]`` where it does; ``--tta`` overrides it."""
    scene = tif(smooth_image(3, 70, 58, seed=4))
    own = build_tiny_unet(tmp_path / "own.keras", inference={"best": {"tta": "flip", "tta_mean": "geometric"}})

    def run(name, model, *args):
        r = runner.invoke(main, ["run", scene, "-o", str(tmp_path / name), "--model", model, "--output",
                                 "probability", "-q", *args])
        assert r.exit_code == 0, r.output
        return _probabilities(tmp_path / name)

    best, tags = run("best.tif", tiny_model, "--quality", "best")
    d4, _ = run("d4.tif", tiny_model, "--tta", "d4")
    plain, _ = run("plain.tif", tiny_model)
    np.testing.assert_array_equal(best, d4)
    assert tags["TILER_TTA"] == "d4" and np.abs(best - plain).max() > 1e-3  # the preset really changes the run
    own_best, tags = run("own_best.tif", own, "--quality", "best")
    own_flip, _ = run("own_flip.tif", own, "--tta", "flip", "--tta-mean", "geometric")
    np.testing.assert_array_equal(own_best, own_flip)
    assert tags["TILER_TTA"] == "flip"
    overridden, _ = run("overridden.tif", tiny_model, "--quality", "best", "--tta", "none")
    np.testing.assert_array_equal(overridden, plain)


def test_quality_presets_resolve_from_the_model_and_refuse_what_they_do_not_know(tmp_path, tiny_model):
    info = read_info(tiny_model)
    assert InferenceConfig().for_model(info).network_options()["tta"] == "none"
    resolved = InferenceConfig(quality="best").for_model(info)
    assert (resolved.tta, resolved.tta_mean) == ("d4", "arithmetic")
    assert InferenceConfig(quality="best").network_options()["tta"] == "d4"  # no model: the preset's default
    with pytest.raises(UsageError, match="quality must be one of standard, best"):
        InferenceConfig(quality="fastest")
    with pytest.raises(ModelFileError, match="recommended best settings"):
        build_tiny_unet(tmp_path / "bad.keras", inference={"best": {"tta": "d8"}})
