"""Segmentation losses with an ignore label, in ``keras.ops`` only.

All losses take ``y_true`` of shape (batch, row, col) integer class indices,
with :data:`tiler.labels.IGNORE` (255) for unlabelled pixels, and ``y_pred``
of shape (batch, row, col, K) probabilities. Ignored pixels contribute nothing.
"""

from __future__ import annotations

from tiler.labels import IGNORE
from tiler.model._backend import import_keras

keras = import_keras()  # quietly: the backend's start-up lines only at -vv
ops = keras.ops

__all__ = ["soft_dice_loss", "soft_jaccard_loss", "cross_entropy_loss", "DiceCrossEntropy"]

#: Smoothing term of the soft Dice / Jaccard ratios (avoids 0/0 for a class
#: absent from a batch); 1 pixel, as in Milletari et al. (2016).
SMOOTH = 1.0
#: Probabilities are clipped to [EPSILON, 1] before the logarithm.
EPSILON = 1e-7


def _one_hot_and_mask(y_true, classes: int):
    y = ops.cast(y_true, "int32")
    if len(y.shape) == 4:  # (batch, row, col, 1)
        y = ops.squeeze(y, axis=-1)
    valid = ops.cast(ops.not_equal(y, IGNORE), "float32")
    safe = ops.where(ops.equal(y, IGNORE), ops.zeros_like(y), y)
    onehot = ops.one_hot(safe, classes) * valid[..., None]
    return onehot, valid


def _overlaps(y_true, y_pred):
    y_pred = ops.cast(y_pred, "float32")
    onehot, valid = _one_hot_and_mask(y_true, y_pred.shape[-1])
    p = y_pred * valid[..., None]
    axes = (0, 1, 2)
    inter = ops.sum(p * onehot, axis=axes)
    return inter, ops.sum(p, axis=axes), ops.sum(onehot, axis=axes)


def soft_dice_loss(y_true, y_pred):
    """Soft Dice loss, ``1 - mean_k (2 |P_k T_k| + s) / (|P_k| + |T_k| + s)``.

    Sums run over the whole batch per class (the "batch Dice"), then the mean
    is taken over classes. Returns a scalar.

    References
    ----------
    F. Milletari, N. Navab, S.-A. Ahmadi, "V-Net", 3DV 2016, arXiv:1606.04797.
    """
    inter, p, t = _overlaps(y_true, y_pred)
    return 1.0 - ops.mean((2.0 * inter + SMOOTH) / (p + t + SMOOTH))


def soft_jaccard_loss(y_true, y_pred):
    """Soft Jaccard (IoU) loss, ``1 - mean_k (|P_k T_k| + s) / (|P_k| + |T_k| - |P_k T_k| + s)``.

    References
    ----------
    M. A. Rahman, Y. Wang, "Optimizing Intersection-Over-Union in Deep Neural
    Networks for Image Segmentation", ISVC 2016.
    """
    inter, p, t = _overlaps(y_true, y_pred)
    return 1.0 - ops.mean((inter + SMOOTH) / (p + t - inter + SMOOTH))


def cross_entropy_loss(y_true, y_pred):
    """Categorical cross-entropy averaged over the labelled pixels. Returns a scalar."""
    y_pred = ops.cast(y_pred, "float32")
    onehot, valid = _one_hot_and_mask(y_true, y_pred.shape[-1])
    ce = -ops.sum(onehot * ops.log(ops.clip(y_pred, EPSILON, 1.0)), axis=-1)
    return ops.sum(ce) / ops.maximum(ops.sum(valid), 1.0)


@keras.saving.register_keras_serializable(package="tiler")
class DiceCrossEntropy(keras.losses.Loss):
    """``cross_entropy_loss + dice_weight * soft_dice_loss``, ignoring label 255.

    The small-data recipe of the Dstl-challenge solutions: Dice keeps rare
    classes from being swamped, cross-entropy keeps gradients well behaved.

    Parameters
    ----------
    dice_weight : float, default 1.0
        Weight of the soft Dice term.
    """

    def __init__(self, dice_weight: float = 1.0, name: str = "dice_ce", **kwargs):
        super().__init__(name=name, reduction="none", **kwargs)
        self.dice_weight = float(dice_weight)

    def call(self, y_true, y_pred):
        return cross_entropy_loss(y_true, y_pred) + self.dice_weight * soft_dice_loss(y_true, y_pred)

    def get_config(self):
        return {"dice_weight": self.dice_weight, "name": self.name}


@keras.saving.register_keras_serializable(package="tiler")
class JaccardCrossEntropy(keras.losses.Loss):
    """``cross_entropy_loss + jaccard_weight * soft_jaccard_loss``, ignoring label 255.

    The soft-Jaccard alternative to :class:`DiceCrossEntropy` (the Dstl
    solutions trained on cross-entropy minus log-Jaccard); a search chooses.

    Parameters
    ----------
    jaccard_weight : float, default 1.0
        Weight of the soft Jaccard term.
    """

    def __init__(self, jaccard_weight: float = 1.0, name: str = "jaccard_ce", **kwargs):
        super().__init__(name=name, reduction="none", **kwargs)
        self.jaccard_weight = float(jaccard_weight)

    def call(self, y_true, y_pred):
        return cross_entropy_loss(y_true, y_pred) + self.jaccard_weight * soft_jaccard_loss(y_true, y_pred)

    def get_config(self):
        return {"jaccard_weight": self.jaccard_weight, "name": self.name}
