"""The U-Net, its losses, the self-describing model file and prediction (training: :mod:`tiler.training`).

Names load on first use (PEP 562): Keras and its backend are imported only
where a network is built or loaded, never to read a model file's metadata.
"""

from typing import TYPE_CHECKING

from tiler._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_MODEL_PATH": "_registry",
    "METADATA_NAME": "_info",
    "ModelInfo": "_info",
    "TilerModel": "_file",
    "load_model": "_file",
    "read_info": "_file",
    "save_model": "_file",
    "update_info": "_file",
    "DiceCrossEntropy": "_losses",
    "cross_entropy_loss": "_losses",
    "soft_dice_loss": "_losses",
    "soft_jaccard_loss": "_losses",
    "Predictor": "_predictor",
    "build_unet": "_unet",
}

_, __getattr__, __dir__ = lazy_exports("tiler.model", _EXPORTS)

__all__ = ["DEFAULT_MODEL_PATH", "DiceCrossEntropy", "METADATA_NAME", "ModelInfo", "Predictor", "TilerModel",
           "build_unet", "cross_entropy_loss", "load_model", "read_info", "save_model", "soft_dice_loss",
           "soft_jaccard_loss", "update_info"]

if TYPE_CHECKING:  # the names as static analysers and the API reference see them
    from tiler.model._file import TilerModel, load_model, read_info, save_model, update_info
    from tiler.model._info import METADATA_NAME, ModelInfo
    from tiler.model._losses import DiceCrossEntropy, cross_entropy_loss, soft_dice_loss, soft_jaccard_loss
    from tiler.model._predictor import Predictor
    from tiler.model._registry import DEFAULT_MODEL_PATH
    from tiler.model._unet import build_unet
