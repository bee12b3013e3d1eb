"""Batched prediction of patches, with optional dihedral test-time augmentation."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Callable, Optional

import numpy as np

from tiler.blend import GEOMETRIC_EPSILON, TTA_MEANS, TTA_TRANSFORMS, d4_expand, d4_merge
from tiler.errors import PlanError
from tiler.model._file import TilerModel

__all__ = ["Predictor", "TTA_DEVICES"]

#: Where the D4 rotations of a batch run: inside the Keras graph (on the
#: accelerator where there is one) or on the host with numba kernels.
TTA_DEVICES = ("graph", "host")

Network = Callable[[np.ndarray], np.ndarray]
"""``f(batch (patch, channel, row, col) normalised float32) -> (patch, K, row, col) float32``."""


def _k_rot90(x, r: int):
    """Rotate NHWC tensors by r quarter turns counter-clockwise (``np.rot90`` on axes 1, 2)."""
    from keras import ops

    r %= 4
    if r == 1:
        return ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=1)
    if r == 2:
        return ops.flip(ops.flip(x, axis=1), axis=2)
    if r == 3:
        return ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=2)
    return x


def _k_transform(x, t: int):
    from keras import ops

    x = _k_rot90(x, t % 4)
    return ops.flip(x, axis=2) if t >= 4 else x


def _k_inverse(y, t: int):
    from keras import ops

    if t >= 4:
        y = ops.flip(y, axis=2)
    return _k_rot90(y, -(t % 4))


def _graph_tta_model(net, transforms: tuple[int, ...], geometric: bool, softmax: bool):
    """A Keras model that runs all variants of a batch through ``net`` in one call.

    The rotations, the inverse rotations and the mean are ``keras.ops``, so
    they are part of the compiled graph and run where the model runs.
    """
    import keras
    from keras import ops

    class D4Model(keras.Model):
        def __init__(self):
            super().__init__(name="tiler_tta")
            self.net = net

        def call(self, x):
            n = ops.shape(x)[0]
            y = self.net(ops.concatenate([_k_transform(x, t) for t in transforms], axis=0), training=False)
            total = None
            for i, t in enumerate(transforms):
                part = _k_inverse(y[i * n:(i + 1) * n], t)
                if geometric:
                    part = ops.log(ops.maximum(part, float(GEOMETRIC_EPSILON)))
                total = part if total is None else total + part
            mean = total / float(len(transforms))
            if geometric:
                mean = ops.exp(mean)
                if softmax:
                    mean = mean / ops.sum(mean, axis=-1, keepdims=True)
            return mean

    return D4Model()


def _normalising_model(net, offset: np.ndarray, inv_scale: np.ndarray):
    """``net`` behind the model's channel normalisation, ``(x - offset) * inv_scale``, as ``keras.ops``.

    The normalisation then runs with the network (on the accelerator where
    there is one) instead of as an extra pass over every batch on the host.
    """
    import keras

    class Normalised(keras.Model):
        def __init__(self):
            super().__init__(name="tiler_normalised")
            self.net = net
            self.offset = offset.reshape(1, 1, 1, -1).astype(np.float32)
            self.inv_scale = inv_scale.reshape(1, 1, 1, -1).astype(np.float32)

        def call(self, x):
            return self.net((x - self.offset) * self.inv_scale, training=False)

    return Normalised()


class Predictor:
    """Run a model on batches of patches, optionally with test-time augmentation.

    Normalises each channel as the model's metadata says, sends the batch to
    the Keras backend (and so to the accelerator where there is one), and
    returns class probabilities. With ``tta``, each patch is also predicted
    rotated and mirrored, each prediction is exactly un-transformed, and the
    results are averaged.

    Parameters
    ----------
    model : TilerModel
        The model and its metadata.
    batch_size : int, default 8
        Patches per network call (with TTA the network sees ``T *
        batch_size`` variants per call, T = 2 for ``flip``, 8 for ``d4``).
    tta : {"none", "flip", "d4"}
        Test-time augmentation: identity only; identity and mirror; all 8
        dihedral transforms (4 rotations x mirror).
    tta_mean : {"arithmetic", "geometric"}
        Averaging of the variants' probabilities. The geometric mean is
        renormalised over classes for softmax models.
    tta_device : {"graph", "host"}
        Where the rotations run: ``graph`` in the Keras graph (``keras.ops``,
        on the accelerator where there is one), ``host`` with numba kernels.
    runtime : {"auto", "keras", "openvino"}
        What executes the network (:func:`tiler.model._runtime.make_runtime`):
        ``auto`` is OpenVINO on a CPU where it is installed, else Keras.
    precision : {"float32", "bfloat16", "float16"}
        Compute precision of the network (float32: the reference).
    checked : bool, default False
        The runtime and precision were checked against this model where the run was resolved
        (:func:`tiler.pipeline.resolve_run`): not checked again.

    Raises
    ------
    PlanError
        For a bad batch size or an unknown option.

    Attributes
    ----------
    network_seconds : float
        Time spent inside network calls (TTA on the host excluded).
    runtime : Runtime or None
        The runtime of the last batch shape (None before the first batch or :meth:`prepare`).

    Notes
    -----
    A predictor is called from one thread at a time (the engine's network
    stage).
    """

    def __init__(self, model: TilerModel, *, batch_size: int = 8, tta: str = "none",
                 tta_mean: str = "arithmetic", tta_device: str = "graph", runtime: str = "auto",
                 precision: str = "float32", checked: bool = False) -> None:
        from tiler.model._runtime import check_runtime

        if not checked:  # refused when built, not at the first batch
            check_runtime(runtime, precision, onnx=model.info.is_onnx)
        if model.info.is_onnx and tta != "none":
            tta_device = "host"  # no Keras graph to put the rotations in: the numba kernels do them
        self.model = model
        self._setup(len(model.info.classes), batch_size, tta, tta_mean, tta_device,
                    softmax=model.info.activation == "softmax")
        self._runtime_name, self._precision = runtime, precision
        self._keras = None  # built on first need: a converted network in the cache needs no Keras

    def _build(self, precision: str):
        """The Keras network that maps a raw NHWC batch to probabilities, computing in ``precision``."""
        from tiler.model._runtime import with_precision

        info = self.model.info
        offset = np.asarray(info.offset, np.float32)
        inv_scale = (1.0 / np.asarray(info.scale, np.float64)).astype(np.float32)
        net = _normalising_model(with_precision(self.model.keras_model, precision), offset, inv_scale)
        if self.tta != "none" and self.tta_device == "graph":
            net = _graph_tta_model(net, TTA_TRANSFORMS[self.tta], self.tta_mean == "geometric", self._softmax)
        return net

    def _network_key(self, shape: tuple[int, ...]) -> str:
        """A digest of what the network's output depends on: the model file's bytes (architecture,
        weights, normalisation), the TTA, the batch shape and tiler's version; computed without Keras."""
        from tiler._version import __version__

        h = hashlib.sha256()
        h.update(json.dumps([self.model.digest, self.tta, self.tta_mean, self.tta_device, list(shape),
                             __version__]).encode())
        return h.hexdigest()[:24]

    def _network(self, precision: str):
        """The Keras network computing in ``precision`` (float32 built once); Keras loads here."""
        if precision != "float32":
            return self._build(precision)
        if self._keras is None:
            self._keras = self._build("float32")
        return self._keras

    def _runtime_for(self, shape: tuple[int, ...]):
        if shape not in self._runtimes and self.model.info.is_onnx:
            from tiler.model._onnx import OnnxRuntime
            from tiler.model._runtime import onnx_engine

            self._runtimes[shape] = OnnxRuntime(self.model.path, self.model.info, shape,
                                                engine=onnx_engine(self._runtime_name), precision=self._precision)
        if shape not in self._runtimes:
            from tiler.model._runtime import make_runtime

            self._runtimes[shape] = make_runtime(
                self._network, shape, runtime=self._runtime_name, precision=self._precision,
                key=lambda: self._network_key(shape), checked=True)  # checked when this predictor was built
        self.runtime = self._runtimes[shape]
        return self.runtime

    @classmethod
    def from_network(cls, network: Network, classes: int, *, batch_size: int = 8, tta: str = "none",
                     tta_mean: str = "arithmetic", softmax: bool = False) -> "Predictor":
        """A predictor around a plain function (no Keras, no normalisation); TTA on the host.

        Used by benchmarks and tests with stand-in models.
        """
        self = cls.__new__(cls)
        self.model = None
        self._setup(classes, batch_size, tta, tta_mean, "host", softmax=softmax)
        self._plain = network
        return self

    def _setup(self, classes: int, batch_size: int, tta: str, tta_mean: str, tta_device: str, *,
               softmax: bool) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise PlanError(f"batch size must be a positive integer, got {batch_size!r}")
        if tta not in TTA_TRANSFORMS:
            raise PlanError(f"unknown test-time augmentation {tta!r}; choose {', '.join(TTA_TRANSFORMS)}")
        if tta_mean not in TTA_MEANS:
            raise PlanError(f"TTA mean must be one of {', '.join(TTA_MEANS)}, got {tta_mean!r}")
        if tta_device not in TTA_DEVICES:
            raise PlanError(f"TTA device must be one of {', '.join(TTA_DEVICES)}, got {tta_device!r}")
        self.classes = int(classes)
        self.batch_size = int(batch_size)
        self.tta, self.tta_mean, self.tta_device = tta, tta_mean, tta_device
        self._softmax = softmax
        self.network_seconds = 0.0
        self._runtimes: dict = {}
        self.runtime = None

    def prepare(self, patch: int) -> None:
        """Build the runtime of a full batch of ``patch`` x ``patch`` patches now.

        Loading and compiling the network (and converting it on a cache miss)
        otherwise happens at the first batch. The streaming engine calls this
        on its network thread as the stream starts, so that it overlaps the
        reading and batching of the first strip (a stream of an all-nodata
        scene, which predicts nothing, builds it too). Idempotent; a
        plain-function predictor (:meth:`from_network`) has nothing to build.

        Parameters
        ----------
        patch : int
            Patch side, pixels.

        Raises
        ------
        TilerError
            As the first batch would: a network that cannot be converted or
            compiled (the engine raises it where the first batch would).
        """
        if self.model is None:
            return
        n = self.batch_size
        if self.tta != "none" and self.tta_device == "host":
            n *= len(TTA_TRANSFORMS[self.tta])  # the variants go through the network as one batch
        t = time.perf_counter()
        self._runtime_for((n, patch, patch, len(self.model.info.channels)))
        self.network_seconds += time.perf_counter() - t

    def _run_network(self, batch: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        if self.model is None:
            out = np.asarray(self._plain(batch), np.float32)
        else:
            patches, channels, height, width = batch.shape
            runtime = self._runtime_for((patches, height, width, channels))
            if runtime.layout == "NCHW":
                out = runtime(np.ascontiguousarray(batch, dtype=np.float32))
            else:
                nhwc = np.ascontiguousarray(np.transpose(batch, (0, 2, 3, 1)), dtype=np.float32)
                out = np.transpose(runtime(nhwc), (0, 3, 1, 2))
        self.network_seconds += time.perf_counter() - t
        return out

    def __call__(self, patches: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Predict class probabilities.

        Parameters
        ----------
        patches : ndarray of shape (patch, channel, row, col), float32
            Channels as read from the scene (not yet normalised: the
            normalisation runs inside the Keras model), in the model's channel
            order; any strides (a view of a strip is fine).
        out : ndarray of shape (patch, K, row, col), float32, optional
            Where to write the result.

        Returns
        -------
        ndarray of shape (patch, K, row, col), float32
        """
        n = patches.shape[0]
        if out is None and n <= self.batch_size:
            return self._predict_batch(patches)  # the network's own result, no copy
        if out is None:
            out = np.empty((n, self.classes) + patches.shape[2:], np.float32)
        for start in range(0, n, self.batch_size):
            chunk = patches[start:start + self.batch_size]
            out[start:start + len(chunk)] = self._predict_batch(chunk)
        return out

    def _predict_batch(self, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        if n < self.batch_size and self.model is not None:
            # One batch shape for the whole run: a smaller last batch would make the
            # backend trace (TensorFlow, JAX) or compile the network again. Inference
            # is per patch (batch norm uses its moving statistics), so padding with
            # zeros changes nothing for the real patches.
            pad = np.zeros((self.batch_size - n,) + chunk.shape[1:], np.float32)
            return self._predict_batch(np.concatenate([chunk, pad]))[:n]
        if self.tta == "none" or self.tta_device == "graph":
            return self._run_network(chunk)
        merged = d4_merge(self._run_network(d4_expand(np.ascontiguousarray(chunk), self.tta)), self.tta,
                          mean=self.tta_mean)
        if self.tta_mean == "geometric" and self._softmax:
            merged /= merged.sum(axis=1, keepdims=True)
        return merged
