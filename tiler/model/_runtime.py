"""Inference runtimes: what executes the network on a batch, behind one small interface.

A :class:`Runtime` takes a batch of one fixed shape, float32, in its
:attr:`~Runtime.layout` (``NHWC``: ``(patch, row, col, channel)`` in, ``(patch,
row, col, K)`` out; ``NCHW``: ``(patch, channel, row, col)`` in, ``(patch, K,
row, col)`` out) and returns the network's output. The
:class:`~tiler.model.Predictor` builds one per batch shape (the last batch is
padded, so a run has one) and never re-traces.

Measured with ``benchmarks/runtimes.py`` on a 2-core x86 CPU (the bundled
model): OpenVINO 1.2-1.3x the patches/s of Keras ``predict_on_batch`` under
TensorFlow, within 4e-7 of it in float32, so it is the default on a CPU where
the ``openvino`` package is installed; Keras (any backend, on any device) is
the reference and the fallback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from tiler.errors import PlanError

__all__ = ["PRECISIONS", "RUNTIMES", "THREADS_ENV", "KerasRuntime", "OpenVINORuntime", "Runtime", "cache_dir",
           "check_runtime", "num_threads",
           "cpu_infer", "import_openvino", "keras_backend", "make_runtime", "onnx_engine", "openvino_available",
           "with_precision"]

log = logging.getLogger(__name__)

#: ``auto``: OpenVINO on a CPU where it is installed and Keras runs TensorFlow, else Keras (an ONNX model:
#: OpenVINO, else ONNX Runtime). ``onnxruntime`` runs ONNX models only.
RUNTIMES = ("auto", "keras", "openvino", "onnxruntime")

#: Compute precision of the network. float32 is the reference (and the default);
#: bfloat16/float16 are for accelerators (and CPUs with AMX/AVX512-BF16 under OpenVINO).
PRECISIONS = ("float32", "bfloat16", "float16")

_OV_PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
_KERAS_POLICY = {"bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


class Runtime:
    """Executes one network on batches of one shape.

    Attributes
    ----------
    name : str
        ``"keras"`` or ``"openvino"`` (reported in the run report).
    precision : str
        One of :data:`PRECISIONS`.
    shape : tuple of int
        ``(patch, row, col, channel)`` of every batch.
    layout : {"NHWC", "NCHW"}
        The order of the axes of the arrays :meth:`__call__` takes and gives
        (the engine's batches are NCHW: a runtime taking them so needs no
        transposition on the host).
    """

    name = "runtime"
    layout = "NHWC"

    def __init__(self, shape: tuple[int, ...], precision: str) -> None:
        self.shape, self.precision = tuple(int(s) for s in shape), precision

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run the network.

        Parameters
        ----------
        batch : ndarray, float32
            C-contiguous, :attr:`shape` in :attr:`layout` order.

        Returns
        -------
        ndarray of shape (patch, row, col, K) (NHWC) or (patch, K, row, col) (NCHW), float32
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, precision={self.precision!r})"


def with_precision(net, precision: str):
    """A copy of a Keras model that computes in ``precision`` (a mixed policy: float32 variables).

    Parameters
    ----------
    net : keras.Model
    precision : {"float32", "bfloat16", "float16"}

    Returns
    -------
    keras.Model
        ``net`` itself for float32; else a clone whose layers run under
        Keras's ``mixed_bfloat16``/``mixed_float16`` policy, with the same
        weights, and whose output is cast back to float32.

    Notes
    -----
    Mixed precision as Micikevicius et al. (2018), "Mixed precision training",
    ICLR, and Keras's dtype policies: variables and the softmax stay float32.
    """
    if precision == "float32":
        return net
    import keras

    policy = _KERAS_POLICY[precision]

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.InputLayer) or config.get("activation") in ("softmax", "sigmoid"):
            return layer.__class__.from_config(config)
        config["dtype"] = keras.DTypePolicy(policy)
        return layer.__class__.from_config(config)

    if isinstance(net, keras.Sequential) or getattr(net, "_is_graph_network", False) \
            or net.__class__.__name__ == "Functional":
        copy = keras.models.clone_model(net, clone_function=clone)
        copy.set_weights(net.get_weights())
        return copy
    raise PlanError(f"--precision {precision} needs a functional Keras model, got {type(net).__name__}; "
                    "use --precision float32")


class KerasRuntime(Runtime):
    """Keras ``predict_on_batch`` on the active backend (TensorFlow, JAX or PyTorch) and its device.

    Parameters
    ----------
    net : keras.Model
        The network (already at its precision, :func:`with_precision`).
    shape : tuple of int
        ``(patch, row, col, channel)``.
    precision : str
    """

    name = "keras"

    def __init__(self, net, shape: tuple[int, ...], precision: str = "float32") -> None:
        super().__init__(shape, precision)
        import keras

        self._net = net
        self._torch = keras.backend.backend() == "torch"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._torch:
            # predict_on_batch under torch keeps each batch's device tensors in a
            # reference cycle until the cyclic GC runs, so a sliding-window loop
            # grows GPU memory to OOM (keras-team/keras#23110): call the model
            # directly, without autograd.
            import keras
            import torch

            with torch.no_grad():
                out = self._net(batch, training=False)
            return np.asarray(keras.ops.convert_to_numpy(out), np.float32)
        return np.asarray(self._net.predict_on_batch(batch), np.float32)


def import_openvino():
    """Import ``openvino`` with its usage telemetry off.

    Returns
    -------
    module
        ``openvino``.

    Raises
    ------
    ImportError
        Where it is not installed.

    Notes
    -----
    OpenVINO's model converter (imported by ``import openvino``) sends usage
    events to Google Analytics unless a consent file says no, forking a
    process to do it (openvino-telemetry, opt-out). A segmentation tool has
    no business phoning home, and a fork from tiler's network thread is
    unsafe: before OpenVINO is first imported, ``openvino_telemetry`` is
    marked absent (``sys.modules[name] = None``), which makes the converter
    use its own no-op stub.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def cache_dir() -> Optional[Path]:
    """Where converted networks are kept between runs, or None where caching is off.

    Returns
    -------
    Path or None
        ``$TILER_CACHE_DIR`` (empty: off), else ``$XDG_CACHE_HOME/tiler``,
        else ``~/.cache/tiler``.
    """
    env = os.environ.get("TILER_CACHE_DIR")
    if env is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tiler"


class OpenVINORuntime(Runtime):
    """The network converted by OpenVINO (``openvino.convert_model``) and compiled for the CPU.

    Parameters
    ----------
    net : keras.Model or callable
        A Keras model under the TensorFlow backend (OpenVINO's TensorFlow
        front end traces it with a zero batch of ``shape``), or a callable
        returning it, called only where ``cache`` holds no converted network
        (so that a cached run imports neither Keras nor TensorFlow).
    shape : tuple of int
        ``(patch, row, col, channel)``: the compiled model has this static shape.
    precision : str
        OpenVINO's ``INFERENCE_PRECISION_HINT`` (f32, bf16, f16). f32 is
        pinned: OpenVINO's own default on CPUs with AMX/AVX512-BF16 is bf16.
    cache : path-like, optional
        An OpenVINO IR file (``.xml`` with its ``.bin``) for this exact
        network and shape: read where it exists, written (float32 weights,
        atomically) where it does not. Converting takes 1-2 s; reading, ~0.1 s.

    Raises
    ------
    PlanError
        If the conversion or the compilation fails (naming ``--runtime keras``).

    Notes
    -----
    One synchronous infer request with the ``LATENCY`` performance hint: one
    batch at a time on all the process's cores (the engine's network stage
    overlaps it with the host work). Measured: the ``THROUGHPUT`` hint with an
    asynchronous queue of two requests was no faster on 2 cores, nor were
    batches of 2 to 16 patches of 192 px (50-53 patches/s).

    The compiled network takes and gives NCHW (:func:`_nchw`), the engine's
    layout, so the host transposes nothing.
    """

    name = "openvino"
    layout = "NCHW"

    def __init__(self, net, shape: tuple[int, ...], precision: str = "float32", *,
                 cache: Optional[Path] = None) -> None:
        super().__init__(shape, precision)
        ov = import_openvino()
        core = ov.Core()
        try:
            model = _read_cached(core, cache)
            if model is None:
                if callable(net) and not hasattr(net, "predict_on_batch"):
                    net = net()
                model = ov.convert_model(net, example_input=np.zeros(self.shape, np.float32))
                _write_cached(ov, model, cache)
            self._run = cpu_infer(core, _nchw(ov, model), precision)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types; the message names the fix
            raise PlanError(f"OpenVINO could not convert or compile the model ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); use --runtime keras") from exc

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch)


#: Environment variable capping the threads of the network on the CPU (OpenVINO's ``INFERENCE_NUM_THREADS``;
#: OpenVINO's threading ignores ``OMP_NUM_THREADS``), for several processes sharing a machine. Unset, OpenVINO
#: takes every core: on the 2-core machine two uncapped workers ran as fast as capped ones while both
#: worked, and faster where one part was left alone (benchmarks/worker_threads.py, benchmarks/gigapixel.py),
#: so ``--workers`` leaves it to the user.
THREADS_ENV = "TILER_NUM_THREADS"


def num_threads() -> Optional[int]:
    """The thread cap of :data:`THREADS_ENV`, or None where it is unset (OpenVINO takes every core).

    Raises
    ------
    PlanError
        For a value that is not a positive integer.
    """
    value = os.environ.get(THREADS_ENV)
    if value is None or value == "":
        return None
    if not value.isdigit() or int(value) < 1:
        raise PlanError(f"{THREADS_ENV}={value!r} is not a positive number of threads; unset it or give e.g. 1")
    return int(value)


def cpu_infer(core, model, precision: str) -> Callable[[np.ndarray], np.ndarray]:
    """An OpenVINO model compiled for the CPU, as a function of one batch (Keras-converted and ONNX models alike).

    Parameters
    ----------
    core : openvino.Core
    model : openvino.Model
        With static input shape.
    precision : str
        One of :data:`PRECISIONS` (OpenVINO's ``INFERENCE_PRECISION_HINT``).

    Returns
    -------
    callable
        ``run(batch) -> ndarray`` of the first output, float32: a copy the caller owns.
        Compiled with OpenVINO's ``LATENCY`` hint, on :func:`num_threads` threads, not pinned to cores,
        where :data:`THREADS_ENV` is set, else every core. The infer
        request reuses its output buffer at the next call, and the engine blends a batch while the
        network computes the next.
    """
    config = {"INFERENCE_PRECISION_HINT": _OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
    threads = num_threads()
    if threads is not None:
        # Unpinned: OpenVINO pins its threads to the first cores, so capped processes side by side would all
        # run on core 0 (two workers of one thread: 0.52x the patches/s of one process; unpinned 0.99x,
        # benchmarks/worker_threads.py).
        config.update(INFERENCE_NUM_THREADS=threads, ENABLE_CPU_PINNING=False)
    compiled = core.compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(batch: np.ndarray) -> np.ndarray:
        request.infer({0: batch})
        return np.array(request.get_output_tensor(0).data, np.float32)

    return run


def _nchw(ov, model):
    """The converted network taking and giving NCHW (``PrePostProcessor``), the engine's layout.

    Parameters
    ----------
    ov : module
        ``openvino``.
    model : openvino.Model
        As converted from Keras: input ``(patch, row, col, channel)``, output
        ``(patch, row, col, K)``.

    Returns
    -------
    openvino.Model
        Input ``(patch, channel, row, col)``, output ``(patch, K, row, col)``.

    Notes
    -----
    OpenVINO fuses the input's transposition with the Keras graph's own (its
    convolutions run channels-first), and transposes the output inside the
    graph: no transposed copy on the host either side, and the same values
    bit for bit. Not done: computing a softmax head over the channel axis of
    the NCHW tensor instead of the last axis of the NHWC one. OpenVINO's CPU
    kernel is 2-3x faster so (a 1 x 1 model, 8 patches of 256 px: 6 against
    17 ms a batch), but its results differ from the last-axis kernel's in the
    last bit for about a third of the values (at most 2.4e-7, no more accurate
    against a float64 softmax), and outputs stay byte-identical.
    """
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_layout(ov.Layout("NCHW"))
    ppp.input().model().set_layout(ov.Layout("NHWC"))
    ppp.output().tensor().set_layout(ov.Layout("NCHW"))
    ppp.output().model().set_layout(ov.Layout("NHWC"))
    return ppp.build()


def _read_cached(core, cache: Optional[Path]):
    if cache is None or not cache.is_file() or not cache.with_suffix(".bin").is_file():
        return None
    try:
        return core.read_model(str(cache))
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry is converted again
        log.warning("ignoring the cached network %s (%s); converting the model again", cache, exc)
        return None


def _write_cached(ov, model, cache: Optional[Path]) -> None:
    """Save the IR beside its final name and rename it there (weights first), so a reader never sees half."""
    if cache is None:
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".xml", prefix=".tmp-", dir=cache.parent)
        os.close(fd)
        tmp = Path(tmp)
        try:
            ov.save_model(model, str(tmp), compress_to_fp16=False)  # float32 weights: the 1e-4 bar
            os.replace(tmp.with_suffix(".bin"), cache.with_suffix(".bin"))
            os.replace(tmp, cache)
        finally:
            for leftover in (tmp, tmp.with_suffix(".bin")):
                leftover.unlink(missing_ok=True)
    except OSError as exc:
        log.info("not caching the converted network in %s: %s", cache.parent, exc)


def _cache_file(key: Optional[Callable[[], str]]) -> Optional[Path]:
    folder = cache_dir()
    if key is None or folder is None:
        return None
    version = import_openvino().__version__.split("-")[0]  # "2026.4.1-22982-…/2026/4": its release only
    return folder / "openvino" / f"{key()}-ov{version}.xml"


def openvino_available() -> Optional[str]:
    """Why the OpenVINO runtime cannot run here, or None where it can.

    Returns
    -------
    str or None
        The reason (package missing, another Keras backend, an accelerator
        present), for the ``auto`` choice and the error of an explicit
        ``--runtime openvino``.
    """
    backend = keras_backend()
    if backend != "tensorflow":
        return f"Keras runs the {backend} backend (OpenVINO converts TensorFlow models here)"
    try:
        import_openvino()
    except ImportError:
        return "the openvino package is not installed (pip install openvino)"
    return None


def keras_backend() -> str:
    """The backend Keras runs (or will run), without importing Keras where it is not imported yet.

    Returns
    -------
    str
        ``keras.backend.backend()`` where Keras is imported; else what Keras
        will choose: ``$KERAS_BACKEND``, else the ``backend`` of
        ``$KERAS_HOME/keras.json`` (default ``~/.keras/keras.json``), else
        ``tensorflow`` (Keras 3's own order, ``keras/src/backend/config.py``).
    """
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    env = os.environ.get("KERAS_BACKEND")
    if env:
        return env
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as f:
            return str(json.load(f).get("backend", "tensorflow"))
    except (OSError, ValueError):
        return "tensorflow"


def onnx_engine(runtime: str) -> str:
    """What runs an ONNX model for ``--runtime``: ``openvino`` or ``onnxruntime``.

    ``auto`` is ONNX Runtime where it has a CUDA execution provider
    (``onnxruntime-gpu`` on a GPU machine), else OpenVINO where it is
    installed, else ONNX Runtime on the CPU.

    Raises
    ------
    PlanError
        For ``keras`` (an ONNX graph is no Keras model), or a runtime that is not installed.
    """
    def has_ort() -> bool:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
        return True

    def has_ov() -> bool:
        try:
            import_openvino()
        except ImportError:
            return False
        return True

    if runtime == "keras":
        raise PlanError("--runtime keras cannot run an ONNX model; use --runtime auto, openvino or onnxruntime")
    if runtime == "auto":
        if has_ort():
            import onnxruntime

            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                return "onnxruntime"
        if has_ov():
            return "openvino"
        if has_ort():
            return "onnxruntime"
        raise PlanError("an ONNX model needs OpenVINO or ONNX Runtime: pip install openvino (or onnxruntime)")
    if runtime == "openvino" and not has_ov():
        raise PlanError("--runtime openvino: the openvino package is not installed (pip install openvino)")
    if runtime == "onnxruntime" and not has_ort():
        raise PlanError("--runtime onnxruntime: the onnxruntime package is not installed (pip install "
                        "\"satellite-tiler[onnxruntime]\", or onnxruntime-gpu for CUDA)")
    return runtime


def check_runtime(runtime: str, precision: str, *, onnx: bool = False) -> None:
    """Refuse an unknown runtime or precision, or ``openvino`` where it cannot run, before any work.

    Parameters
    ----------
    runtime : str
        One of :data:`RUNTIMES`.
    precision : str
        One of :data:`PRECISIONS`.
    onnx : bool, default False
        The model is an ONNX graph (:func:`onnx_engine` decides).

    Raises
    ------
    PlanError
        Naming the value and the fix (``--runtime keras`` where OpenVINO
        cannot run: the package missing, another Keras backend).
    """
    if runtime not in RUNTIMES:
        raise PlanError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise PlanError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if onnx:
        onnx_engine(runtime)
        return
    if runtime == "onnxruntime":
        raise PlanError("--runtime onnxruntime runs ONNX models (--model model.onnx); this is a Keras model: "
                        "use auto, keras or openvino")
    if runtime == "openvino":
        reason = openvino_available()
        if reason:
            raise PlanError(f"--runtime openvino cannot run here: {reason}; use --runtime keras")



def _accelerator() -> bool:
    """Whether Keras's backend has a GPU, asked without importing TensorFlow where it cannot have one.

    The CPU-only TensorFlow package (``tensorflow-cpu``, tiler's dependency on
    x86-64) and a machine without an NVIDIA device node have none; only
    otherwise is the backend asked (``keras.distribution.list_devices``).
    """

    if "keras" not in sys.modules:
        try:
            metadata.version("tensorflow")
            gpu_build = True
        except metadata.PackageNotFoundError:
            gpu_build = False
        if not gpu_build or not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")):
            return False
    import keras

    try:
        return bool(keras.distribution.list_devices("gpu"))
    except Exception:  # noqa: BLE001 - a backend without the query has no GPU we know of
        return False


def make_runtime(build: Callable[[str], object], shape: tuple[int, ...], *, runtime: str = "auto",
                 precision: str = "float32", key: Optional[Callable[[], str]] = None,
                 checked: bool = False) -> Runtime:
    """The runtime to execute a network on batches of ``shape``.

    Parameters
    ----------
    build : callable
        ``build(precision) -> keras.Model``: the network with its
        normalisation (and graph TTA) as Keras layers, computing in
        ``precision`` (OpenVINO asks for float32 and lowers the precision
        itself). Not called where OpenVINO finds the converted network in
        its cache: such a run imports neither Keras nor its backend.
    shape : tuple of int
        ``(patch, row, col, channel)`` of every batch.
    runtime : {"auto", "keras", "openvino"}
        ``auto``: OpenVINO on a CPU-only machine where it is installed and Keras
        runs TensorFlow, else Keras. Where OpenVINO is chosen by ``auto`` and
        fails to convert the model, Keras runs it and a warning says why.
    precision : {"float32", "bfloat16", "float16"}
    key : callable, optional
        ``key() -> str``, a digest of everything the network's output depends
        on (weights, architecture, normalisation, TTA, batch shape): names its
        converted form in :func:`cache_dir`; called only where a converted
        form is made. None: never cached.

    checked : bool, default False
        ``runtime`` and ``precision`` were checked already (a :class:`~tiler.model.Predictor` checks them
        when it is built): not again.

    Returns
    -------
    Runtime

    Raises
    ------
    PlanError
        For an unknown runtime or precision, ``openvino`` where it cannot run
        (naming why), or a model OpenVINO cannot convert when asked for by name.
    """
    if not checked:
        check_runtime(runtime, precision)
    if runtime == "openvino":
        return OpenVINORuntime(lambda: build("float32"), shape, precision, cache=_cache_file(key))
    if runtime == "auto" and openvino_available() is None and not _accelerator():
        try:
            return OpenVINORuntime(lambda: build("float32"), shape, precision, cache=_cache_file(key))
        except PlanError as exc:
            log.warning("%s; running the model with Keras instead", exc)
    return KerasRuntime(build(precision), shape, precision)
