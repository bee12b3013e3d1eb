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
    "available_models": "_registry",
    "resolve_model_path": "_registry",
    "NamedModel": "_registry",
    "RUNTIMES": "_runtime",
    "PRECISIONS": "_runtime",
    "check_runtime": "_runtime",
    "THREADS_ENV": "_runtime",
    "QUALITY": "_info",
    "QUALITY_TTA": "_info",
    "TTA_DEVICES": "_predictor",
    "export_onnx": "_export",
    "DEFAULT_COLOURS": "_onnx",
    "ENCODERS": "_encoders",
    "build_encoder_unet": "_encoders",
    "encoder_layers": "_encoders",
    "import_keras": "_backend",
    "JaccardCrossEntropy": "_losses",
    "KERNEL_INITIALIZERS": "_unet",
    "mlm_properties": "_mlm",
    "classification_classes": "_mlm",
    "mlm_item": "_mlm",
    "model_asset": "_mlm",
    "info_from_mlm": "_mlm",
    "model_from_mlm": "_mlm",
    "is_mlm_item": "_mlm",
}

_, __getattr__, __dir__ = lazy_exports("tiler.model", _EXPORTS)

__all__ = ["DEFAULT_COLOURS", "DEFAULT_MODEL_PATH", "DiceCrossEntropy", "ENCODERS", "JaccardCrossEntropy",
           "KERNEL_INITIALIZERS", "METADATA_NAME", "ModelInfo", "NamedModel", "PRECISIONS", "Predictor",
           "QUALITY", "QUALITY_TTA",
           "RUNTIMES", "THREADS_ENV", "TTA_DEVICES", "TilerModel", "available_models", "build_encoder_unet",
           "build_unet",
           "check_runtime", "cross_entropy_loss", "encoder_layers", "export_onnx", "import_keras", "load_model",
           "read_info", "resolve_model_path", "save_model", "soft_dice_loss", "soft_jaccard_loss", "update_info",
           "mlm_properties", "classification_classes", "mlm_item", "model_asset", "info_from_mlm", "model_from_mlm",
           "is_mlm_item"]

if TYPE_CHECKING:  # the names as static analysers and the API reference see them
    from tiler.model._backend import import_keras
    from tiler.model._encoders import ENCODERS, build_encoder_unet, encoder_layers
    from tiler.model._export import export_onnx
    from tiler.model._file import TilerModel, load_model, read_info, save_model, update_info
    from tiler.model._info import METADATA_NAME, QUALITY, QUALITY_TTA, ModelInfo
    from tiler.model._losses import (
        DiceCrossEntropy,
        JaccardCrossEntropy,
        cross_entropy_loss,
        soft_dice_loss,
        soft_jaccard_loss,
    )
    from tiler.model._mlm import (
        classification_classes,
        info_from_mlm,
        is_mlm_item,
        mlm_item,
        mlm_properties,
        model_asset,
        model_from_mlm,
    )
    from tiler.model._onnx import DEFAULT_COLOURS
    from tiler.model._predictor import TTA_DEVICES, Predictor
    from tiler.model._registry import DEFAULT_MODEL_PATH, NamedModel, available_models, resolve_model_path
    from tiler.model._runtime import PRECISIONS, RUNTIMES, THREADS_ENV, check_runtime
    from tiler.model._unet import KERNEL_INITIALIZERS, build_unet
