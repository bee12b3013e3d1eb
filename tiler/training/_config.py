"""The options of a training run (:class:`TrainConfig`): a light module, read by ``tiler train`` for its defaults
without importing Keras."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tiler.errors import PlanError

__all__ = ["TrainConfig", "LOSSES", "RECOMMENDED_PATCH_FACTOR", "RECOMMENDED_OVERLAP", "RECOMMENDED_WINDOW"]


#: What ``tiler train`` recommends for inference unless told otherwise: patches this
#: many times the training patch, this overlap and window. From the quality-speed
#: frontier of the bundled model on the held-out Dubai tile 7
#: (``benchmarks/frontier.py``, table in docs/benchmarks.md): larger patches than the
#: training patch scored lower and were no faster (the network's cost is per
#: pixel, and large patches waste more past the scene's edges), while overlap
#: 0.125 scored as well as 0.5 and predicts each pixel 1.3 instead of 4 times.
RECOMMENDED_PATCH_FACTOR = 1
RECOMMENDED_OVERLAP = 0.125
RECOMMENDED_WINDOW = "spline"
#: Training losses: cross-entropy plus soft Dice, or plus soft Jaccard.
LOSSES = ("dice", "jaccard")


@dataclass(frozen=True)
class TrainConfig:
    """Options of a training run.

    Parameters
    ----------
    patch_size : int
        Training patch side in pixels, a multiple of ``2**depth``.
    batch_size : int
        Patches per step (small mini-batches suit small data).
    epochs : int
        Maximum number of epochs.
    steps_per_epoch : int
        Random-patch batches per epoch.
    learning_rate : float
        Initial Adam learning rate; halved after ``patience // 2`` epochs
        without a better validation mean IoU.
    patience : int
        Early stopping: epochs without improvement before stopping.
    depth, base_filters, dropout, batch_norm, kernel_initializer
        U-Net shape and initialisation (see :func:`tiler.model.build_unet`).
    jitter : float
        Colour jitter: per-channel gain in ``[1 - jitter, 1 + jitter]`` and an
        offset of up to ``jitter`` channel standard deviations.
    class_balance : float
        Fraction of the patches centred (within a quarter patch) on a pixel of
        a class drawn uniformly from the classes present, the rest drawn
        uniformly from the images: oversampling the rare classes, which Buda,
        Maki and Mazurowski (2018, *Neural Networks* 106, 249-259) found the
        best remedy for class imbalance in CNN training. 0 disables it.
    dice_weight : float
        Weight of the overlap term (soft Dice, or soft Jaccard) beside
        cross-entropy.
    loss : {"dice", "jaccard"}
        Cross-entropy plus soft Dice (:class:`tiler.model.DiceCrossEntropy`)
        or plus soft Jaccard (:class:`tiler.model.JaccardCrossEntropy`).
    val_overlap : float
        Patch overlap when predicting whole validation images.
    infer_patch_size, infer_overlap, infer_window : optional
        The inference settings written into the model file as its
        recommendation (:attr:`tiler.model.ModelInfo.inference`), the defaults
        of ``tiler run`` with this model; default
        :data:`RECOMMENDED_PATCH_FACTOR` times the training patch,
        :data:`RECOMMENDED_OVERLAP` and :data:`RECOMMENDED_WINDOW`.
    max_minutes : float or None
        Stop after the epoch that passes this wall-clock budget.
    seed : int
        Seed of the patch sampler and of Keras.
    encoder : str or None
        A pretrained encoder (:data:`tiler.model.ENCODERS`) under a
        U-Net decoder, instead of the U-Net from scratch (None). The input
        must be red, green, blue; the normalisation is the encoder's own
        (ImageNet statistics), ``depth`` is 5 (patches are multiples of 32) and
        ``base_filters``/``batch_norm``/``kernel_initializer`` do not apply.
    freeze_epochs : int
        With an encoder, epochs trained with the encoder frozen (weights and
        batch-norm statistics) before everything is trained: the random
        decoder first learns to read the pretrained features. Without an
        encoder it is 0 (``tiler train`` refuses it there).
    unfreeze_lr_factor : float
        The learning rate is multiplied by this when the encoder is unfrozen:
        fine-tuning pretrained weights wants smaller steps than training a
        random decoder (measured on Dubai tiles 1-6/7 with MobileNetV2: at the
        decoder's 1e-3 the tile-7 mean IoU fell from 0.42 after the frozen
        epoch to 0.28 after the next).
    """

    patch_size: int = 256
    batch_size: int = 8
    epochs: int = 50
    steps_per_epoch: int = 100
    learning_rate: float = 1e-3
    patience: int = 8
    depth: int = 4
    base_filters: int = 16
    dropout: float = 0.1
    batch_norm: bool = True
    kernel_initializer: str = "he_normal"
    loss: str = "dice"
    jitter: float = 0.1
    class_balance: float = 0.0
    dice_weight: float = 1.0
    val_overlap: float = 0.25
    infer_patch_size: Optional[int] = None
    infer_overlap: Optional[float] = None
    infer_window: Optional[str] = None
    max_minutes: Optional[float] = None
    seed: int = 0
    encoder: Optional[str] = None
    freeze_epochs: int = 0
    unfreeze_lr_factor: float = 0.1

    def recommendation(self) -> dict:
        """The inference settings to record in the model file (``patch_size``, ``overlap``, ``window``)."""
        return {"patch_size": self.infer_patch_size or RECOMMENDED_PATCH_FACTOR * self.patch_size,
                "overlap": RECOMMENDED_OVERLAP if self.infer_overlap is None else self.infer_overlap,
                "window": self.infer_window or RECOMMENDED_WINDOW}

    def __post_init__(self) -> None:
        if self.encoder in ("none", ""):  # a search space's spelling of "the U-Net from scratch"
            object.__setattr__(self, "encoder", None)
        if self.encoder is not None:
            from tiler.model import ENCODERS

            if self.encoder not in ENCODERS:
                raise PlanError(f"unknown encoder {self.encoder!r}; choose {', '.join(ENCODERS)}")
            object.__setattr__(self, "depth", 5)  # the encoders' five stride-2 steps
        if self.freeze_epochs < 0:
            raise PlanError(f"freeze_epochs must be >= 0, got {self.freeze_epochs}")
        if self.encoder is None:  # nothing to freeze (a search space may pair it with "none")
            object.__setattr__(self, "freeze_epochs", 0)
        if not 0 < self.unfreeze_lr_factor <= 1:
            raise PlanError(f"unfreeze_lr_factor must be in (0, 1], got {self.unfreeze_lr_factor}")
        if self.patch_size % (2 ** self.depth):
            raise PlanError(
                f"patch size {self.patch_size} is not divisible by 2**depth = {2 ** self.depth}; "
                f"use a multiple of {2 ** self.depth}"
            )
        rec = self.recommendation()
        if rec["patch_size"] % (2 ** self.depth) or not 0 <= rec["overlap"] < 1:
            raise PlanError(f"recommended inference patch {rec['patch_size']} must be a multiple of 2**depth = "
                            f"{2 ** self.depth} and overlap {rec['overlap']} a fraction in [0, 1)")
        from tiler.blend import WINDOWS

        if rec["window"] not in WINDOWS:
            raise PlanError(f"--infer-window {rec['window']!r} is not one of {', '.join(WINDOWS)}")
        from tiler.model import KERNEL_INITIALIZERS

        if self.kernel_initializer not in KERNEL_INITIALIZERS:
            raise PlanError(f"kernel initializer {self.kernel_initializer!r} is not one of "
                            f"{', '.join(KERNEL_INITIALIZERS)}")
        if self.loss not in LOSSES:
            raise PlanError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if not 0 <= self.class_balance <= 1:
            raise PlanError(f"class_balance must be a fraction in [0, 1], got {self.class_balance}")
        if not 0 <= self.dropout < 1:
            raise PlanError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("batch_size", "epochs", "steps_per_epoch", "patience"):
            if getattr(self, name) < 1:
                raise PlanError(f"{name} must be >= 1, got {getattr(self, name)}")
