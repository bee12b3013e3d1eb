"""Inference runtimes: every runtime offered agrees with the TensorFlow reference on real scenes.

The reference is Keras ``predict_on_batch`` under TensorFlow (``--runtime keras``), the
runtime tiler has always had; the bar is 1e-4 in probability.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import needs_shared
from tiler.errors import PlanError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "dubai_sample.tif"
TILE7 = ROOT.parent / "shared" / "data" / "dubai_aerial" / "tile_7" / "images"
BAR = 1e-4

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

try:
    from tiler.model._runtime import import_openvino

    openvino = import_openvino()
except ImportError:
    pytest.skip("the openvino package is not installed", allow_module_level=True)


def _crop(path, rows, cols):
    with rasterio.open(path) as src:
        return src.read(window=((rows[0], rows[1]), (cols[0], cols[1]))).astype(np.float32)


def _probabilities(image, runtime, **options):
    from tiler.model import load_model
    from tiler.pipeline import predict

    return predict(image, model=load_model(None), runtime=runtime, **options)


def test_openvino_matches_keras_on_the_sample_scene(tmp_path):
    """The whole bundled scene through `run_scene`, probabilities written and read back: within 1e-4."""
    from tiler import run_scene

    reports = {}
    for runtime in ("keras", "openvino"):
        reports[runtime] = run_scene(SAMPLE, tmp_path / f"{runtime}.tif", runtime=runtime, output="probability")
        assert reports[runtime].model["runtime"] == runtime
    with rasterio.open(tmp_path / "keras.tif") as a, rasterio.open(tmp_path / "openvino.tif") as b:
        ref, got = a.read(), b.read()
    assert np.isfinite(ref).all()
    assert np.abs(got - ref).max() <= BAR


@needs_shared(TILE7)
def test_openvino_matches_keras_on_an_unseen_tile_with_graph_tta():
    """A crop of tile 7 (never trained on), D4 test-time augmentation in the graph: within 1e-4."""
    image = next(iter(sorted(TILE7.glob("*.jpg"))))
    crop = _crop(image, (0, 400), (0, 400))
    ref = _probabilities(crop, "keras", tta="d4")
    got = _probabilities(crop, "openvino", tta="d4")
    assert np.abs(got - ref).max() <= BAR


def test_converted_network_is_cached_and_a_damaged_cache_is_converted_again(tmp_path, monkeypatch, caplog):
    from tiler.model import Predictor, load_model

    monkeypatch.setenv("TILER_CACHE_DIR", str(tmp_path / "cache"))
    tm = load_model(None)
    x = _crop(SAMPLE, (0, 192), (0, 384)).reshape(3, 192, 2, 192).transpose(2, 0, 1, 3).copy()
    first = Predictor(tm, batch_size=2, runtime="openvino")(x)
    cached = sorted((tmp_path / "cache" / "openvino").iterdir())
    assert [p.suffix for p in cached] == [".bin", ".xml"]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although cached")

    with monkeypatch.context() as m:
        m.setattr(openvino, "convert_model", no_conversion)
        again = Predictor(tm, batch_size=2, runtime="openvino")(x)
    np.testing.assert_array_equal(again, first)

    cached[0].write_bytes(b"not weights")
    with caplog.at_level("WARNING"):
        repaired = Predictor(tm, batch_size=2, runtime="openvino")(x)
    assert "converting the model again" in caplog.text
    np.testing.assert_array_equal(repaired, first)
    assert cached[0].stat().st_size > 1000


def test_openvino_takes_and_gives_nchw_bit_for_bit_as_the_converted_network(tmp_path, monkeypatch):
    """The runtime's NCHW network (layouts set with OpenVINO's PrePostProcessor, the engine's batches as they
    are) gives the very bits of the network as converted from Keras fed NHWC: outputs stay byte-identical."""
    from tiler.model import Predictor, load_model

    monkeypatch.setenv("TILER_CACHE_DIR", str(tmp_path / "cache"))
    x = _crop(SAMPLE, (100, 356), (0, 512)).reshape(3, 256, 2, 256).transpose(2, 0, 1, 3).copy()
    predictor = Predictor(load_model(None), batch_size=2, runtime="openvino")
    got = predictor(x)
    assert predictor.runtime.layout == "NCHW" and got.shape == (2, predictor.classes, 256, 256)
    core = openvino.Core()
    xml = next((tmp_path / "cache" / "openvino").glob("*.xml"))
    compiled = core.compile_model(core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    request.infer({0: np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    np.testing.assert_array_equal(got, np.asarray(request.get_output_tensor(0).data).transpose(0, 3, 1, 2))


@pytest.mark.parametrize("tta, device", [("none", "graph"), ("flip", "graph"), ("flip", "host")])
def test_a_network_built_ahead_is_the_one_every_batch_runs(monkeypatch, tiny_model, tmp_path, tta, device):
    """``Predictor.prepare`` (called by the engine as a stream starts) builds the runtime of the batch shape the
    batches then use, full or short, with TTA in the graph or on the host: nothing is built again, and the
    predictions are those of a predictor that built its network at the first batch."""
    from tiler.model import Predictor, _runtime, load_model

    monkeypatch.setenv("TILER_CACHE_DIR", str(tmp_path / "cache"))
    tm = load_model(tiny_model)
    x = np.random.default_rng(0).uniform(0, 255, (5, 3, 32, 32)).astype(np.float32)
    options = dict(batch_size=3, tta=tta, tta_device=device, runtime="openvino")
    expected = Predictor(tm, **options)(x)
    ahead = Predictor(tm, **options)
    ahead.prepare(32)
    assert ahead.runtime is not None and ahead.network_seconds > 0

    def build_again(*args, **kwargs):
        raise AssertionError("the network was built again at a batch")

    monkeypatch.setattr(_runtime, "make_runtime", build_again)
    np.testing.assert_array_equal(ahead(x), expected)  # a full batch of 3, then a short one of 2


def test_a_network_that_cannot_be_built_fails_the_run_once_and_writes_nothing(monkeypatch, tiny_model, tmp_path):
    """Built on the engine's network thread as the stream starts, a network that fails to build stops the run
    with its own error (built once, not again at the first batch) and leaves no output."""
    from tiler import run_scene
    from tiler.model import _runtime

    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise PlanError("OpenVINO could not compile the model (test); use --runtime keras")

    monkeypatch.setattr(_runtime, "make_runtime", refuse)
    with pytest.raises(PlanError, match="could not compile the model"):
        run_scene(SAMPLE, tmp_path / "never.tif", model=tiny_model, force=True)
    assert calls == [1]
    assert not list(tmp_path.iterdir())


def test_auto_falls_back_to_keras_saying_why_and_an_explicit_runtime_does_not(monkeypatch, caplog, tiny_model,
                                                                            tmp_path):
    from tiler.model import Predictor, _runtime, load_model

    def refuse(*args, **kwargs):
        raise PlanError("OpenVINO could not convert or compile the model (test); use --runtime keras")

    monkeypatch.setattr(_runtime, "OpenVINORuntime", refuse)
    x = np.zeros((1, 3, 32, 32), np.float32)
    tm = load_model(tiny_model)
    with caplog.at_level("WARNING"):
        pred = Predictor(tm, batch_size=1)
        pred(x)
    assert pred.runtime.name == "keras" and "running the model with Keras instead" in caplog.text
    with pytest.raises(PlanError, match="use --runtime keras"):
        Predictor(tm, batch_size=1, runtime="openvino")(x)
    monkeypatch.setattr(_runtime, "openvino_available", lambda: "the openvino package is not installed")
    with pytest.raises(PlanError, match="cannot run here: the openvino package is not installed"):
        Predictor(tm, batch_size=1, runtime="openvino")  # refused when built, before any batch
    from tiler import run_scene

    with pytest.raises(PlanError, match="cannot run here"):  # and by a run before it reads the scene
        run_scene(SAMPLE, tmp_path / "never.tif", model=tiny_model, runtime="openvino", force=True)
    assert not list(tmp_path.iterdir())
    with pytest.raises(PlanError, match="unknown runtime"):
        Predictor(tm, runtime="tensorrt")


@pytest.mark.parametrize("runtime", ["keras", "openvino"])
def test_lower_precision_changes_little_and_is_reported(tmp_path, runtime):
    """bfloat16: the same classes almost everywhere, probabilities within a bfloat16 step or so."""
    from tiler import run_scene

    crop = tmp_path / "crop.tif"
    with rasterio.open(SAMPLE) as src:
        profile = src.profile | {"width": 384, "height": 384}
        data = src.read(window=((0, 384), (0, 384)))
    with rasterio.open(crop, "w", **profile) as dst:
        dst.write(data)
    ref = run_scene(crop, tmp_path / "f32.tif", runtime=runtime, output="probability")
    low = run_scene(crop, tmp_path / "bf16.tif", runtime=runtime, precision="bfloat16", output="probability")
    assert (ref.options["inference"]["precision"], low.model["precision"]) == ("float32", "bfloat16")
    with rasterio.open(tmp_path / "f32.tif") as a, rasterio.open(tmp_path / "bf16.tif") as b:
        p32, p16 = a.read(), b.read()
    diff = np.abs(p16 - p32)
    # A bfloat16 step through the bundled EfficientNet-Lite0 U-Net: 99 % of probabilities within 0.05 (99.9 %:
    # 0.057), the worst (where classes are close) within 0.2 (measured 0.12).
    assert np.percentile(diff, 99) < 0.05 and diff.max() < 0.2, (np.percentile(diff, 99), diff.max())
    assert (p16.argmax(0) == p32.argmax(0)).mean() > 0.97


JAX_CHILD = r"""
import json, sys
import numpy as np
import keras
from tiler.model import load_model
from tiler.pipeline import predict
image = np.load(sys.argv[1])
out = {}
for tta in ("none", "d4"):
    out[tta] = predict(image, model=load_model(None), tta=tta, batch_size=4)
np.savez(sys.argv[2], **out)
print(json.dumps({"backend": keras.backend.backend()}))
"""


def test_jax_backend_matches_tensorflow_on_a_real_scene(tmp_path):
    """The bundled model, its normalising wrapper and the graph TTA under KERAS_BACKEND=jax: within 1e-4."""
    pytest.importorskip("jax", reason="jax is not installed (pip install jax)")
    crop = _crop(SAMPLE, (300, 560), (200, 440))  # 2 x 2 patches of the bundled model
    np.save(tmp_path / "crop.npy", crop)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", XLA_PYTHON_CLIENT_PREALLOCATE="false")
    done = subprocess.run([sys.executable, "-c", JAX_CHILD, str(tmp_path / "crop.npy"), str(tmp_path / "jax.npz")],
                          env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["backend"] == "jax"
    got = np.load(tmp_path / "jax.npz")
    for tta in ("none", "d4"):
        ref = _probabilities(crop, "keras", tta=tta, batch_size=4)
        assert np.abs(got[tta] - ref).max() <= BAR, tta


def test_openvino_sends_no_telemetry():
    """Importing OpenVINO through tiler leaves its usage telemetry (Google Analytics, a forked sender) off."""
    code = ("import sys; from tiler.model._runtime import import_openvino; ov = import_openvino(); "
            "import openvino.tools.ovc.convert_impl as c; print(c.tm.__name__, 'openvino_telemetry' in sys.modules "
            "and sys.modules['openvino_telemetry'] is not None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False"]


def test_the_network_takes_the_threads_tiler_num_threads_gives_and_refuses_a_bad_value(monkeypatch):
    """TILER_NUM_THREADS caps the network's threads for processes sharing a machine: OpenVINO's compiled network
    really runs on them, unpinned (its own properties); unset, OpenVINO takes its own; a value that is no
    count is refused."""
    from tiler.model._runtime import cpu_infer, num_threads

    compiled = []

    class Core(openvino.Core):  # the real core, keeping what it compiled
        def compile_model(self, *args, **kwargs):
            compiled.append(super().compile_model(*args, **kwargs))
            return compiled[-1]

    param = openvino.opset13.parameter([1, 2, 4, 4], openvino.Type.f32)
    model = openvino.Model([openvino.opset13.relu(param)], [param])
    monkeypatch.setenv("TILER_NUM_THREADS", "1")
    run = cpu_infer(Core(), model, "float32")
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 2, 4, 4)
    np.testing.assert_array_equal(run(x), np.maximum(x, 0))
    assert compiled[-1].get_property("INFERENCE_NUM_THREADS") == 1
    assert compiled[-1].get_property("ENABLE_CPU_PINNING") is False  # else capped workers share core 0
    monkeypatch.delenv("TILER_NUM_THREADS")
    assert num_threads() is None
    cpu_infer(Core(), model, "float32")
    assert compiled[-1].get_property("INFERENCE_NUM_THREADS") != 1 or (os.cpu_count() or 1) == 1
    monkeypatch.setenv("TILER_NUM_THREADS", "two")
    with pytest.raises(PlanError, match="TILER_NUM_THREADS='two' is not a positive number of threads"):
        num_threads()
