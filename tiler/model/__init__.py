"""The U-Net, its losses, the self-describing model file, prediction and training."""

from tiler.model._file import (
    DEFAULT_MODEL_PATH,
    METADATA_NAME,
    ModelInfo,
    TilerModel,
    load_model,
    read_info,
    save_model,
)
from tiler.model._losses import (
    DiceCrossEntropy,
    cross_entropy_loss,
    soft_dice_loss,
    soft_jaccard_loss,
)
from tiler.model._predictor import Predictor
from tiler.model._unet import build_unet

__all__ = [
    "DEFAULT_MODEL_PATH",
    "METADATA_NAME",
    "DiceCrossEntropy",
    "ModelInfo",
    "Predictor",
    "TilerModel",
    "build_unet",
    "cross_entropy_loss",
    "load_model",
    "read_info",
    "save_model",
    "soft_dice_loss",
    "soft_jaccard_loss",
]
