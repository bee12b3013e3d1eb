"""The U-Net builder (Keras 3, backend-agnostic)."""

from __future__ import annotations

from tiler.errors import PlanError
from tiler.model._backend import import_keras

keras = import_keras()  # quietly: the backend's start-up lines only at -vv
layers = keras.layers

__all__ = ["build_unet"]


#: Weight initialisations of the convolutions a search may choose between (Keras names).
KERNEL_INITIALIZERS = ("he_normal", "he_uniform", "glorot_uniform", "glorot_normal")


def _conv_block(x, filters: int, *, batch_norm: bool, name: str, kernel_initializer: str = "he_normal"):
    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", use_bias=not batch_norm,
            kernel_initializer=kernel_initializer, name=f"{name}_conv{i}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    return x


def build_unet(
    in_channels: int,
    classes: int,
    *,
    depth: int = 4,
    base_filters: int = 16,
    batch_norm: bool = True,
    dropout: float = 0.1,
    activation: str = "softmax",
    kernel_initializer: str = "he_normal",
) -> keras.Model:
    """Build a U-Net for semantic segmentation.

    The network is fully convolutional: it accepts any patch of shape
    ``(row, col, in_channels)`` whose sides are multiples of ``2**depth``.
    Only Keras layers are used (no backend calls), so the same model runs under
    the TensorFlow, JAX and PyTorch backends.

    Parameters
    ----------
    in_channels : int
        Number of input channels (bands and index channels), >= 1.
    classes : int
        Number of output classes, >= 1.
    depth : int, default 4
        Number of 2x down-sampling steps. Patch sides must be divisible by
        ``2**depth``.
    base_filters : int, default 16
        Filters of the first level; each level down doubles them.
    batch_norm : bool, default True
        Batch normalisation after each convolution.
    dropout : float, default 0.1
        Dropout rate in the bottleneck, in [0, 1).
    activation : {"softmax", "sigmoid"}
        ``softmax`` for single-label (mutually exclusive) classes, ``sigmoid``
        for multi-label outputs.
    kernel_initializer : str, default "he_normal"
        Initialisation of the 3x3 convolutions, one of
        :data:`KERNEL_INITIALIZERS`: He et al. (2015), "Delving deep into
        rectifiers", ICCV (the ReLU-aware default), or Glorot & Bengio (2010),
        "Understanding the difficulty of training deep feedforward neural
        networks", AISTATS.

    Returns
    -------
    keras.Model
        Input ``(batch, row, col, in_channels)`` float32, output
        ``(batch, row, col, classes)`` float32 probabilities.

    Raises
    ------
    PlanError
        If a size argument is out of range.

    References
    ----------
    O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
    Biomedical Image Segmentation", MICCAI 2015, arXiv:1505.04597.
    """
    if in_channels < 1 or classes < 1:
        raise PlanError(
            f"in_channels and classes must be >= 1, got {in_channels} and {classes}"
        )
    if not 1 <= depth <= 6:
        raise PlanError(f"depth must be in 1..6, got {depth}")
    if base_filters < 1:
        raise PlanError(f"base_filters must be >= 1, got {base_filters}")
    if not 0.0 <= dropout < 1.0:
        raise PlanError(f"dropout must be in [0, 1), got {dropout}")
    if activation not in ("softmax", "sigmoid"):
        raise PlanError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    if kernel_initializer not in KERNEL_INITIALIZERS:
        raise PlanError(f"kernel initializer must be one of {', '.join(KERNEL_INITIALIZERS)}, "
                        f"got {kernel_initializer!r}")

    inputs = keras.Input(shape=(None, None, in_channels), name="bands")
    x = inputs
    skips = []
    for level in range(depth):
        x = _conv_block(x, base_filters * 2**level, batch_norm=batch_norm, name=f"down{level}",
                        kernel_initializer=kernel_initializer)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, base_filters * 2**depth, batch_norm=batch_norm, name="bottleneck",
                    kernel_initializer=kernel_initializer)
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_tconv")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _conv_block(x, filters, batch_norm=batch_norm, name=f"up{level}",
                        kernel_initializer=kernel_initializer)
    outputs = layers.Conv2D(classes, 1, activation=activation, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=f"unet_d{depth}_f{base_filters}")
