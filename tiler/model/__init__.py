"""The U-Net, its losses, the self-describing model file and prediction (training: :mod:`tiler.training`).

Names load on first use (PEP 562): Keras and its backend are imported only
where a network is built or loaded, never to read a model file's metadata.
"""

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

__all__, __getattr__, __dir__ = lazy_exports("tiler.model", _EXPORTS)
