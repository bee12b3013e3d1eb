"""The inference, streaming and output options ``tiler run`` and ``tiler batch`` share, defined once."""

from __future__ import annotations

from dataclasses import fields

import click

from tiler.cli._common import (
    _bands_option,
    _cluster_options,
    _co_option,
    _cog,
    _input_scale_option,
    _int_list,
    _model_option,
    _overwrite,
    _patch_options,
    _reference,
    _registration_options,
    _resample_option,
    _strip_rows_option,
    config_option,
)
from tiler.config import WORKER_TIMEOUT, InferenceConfig, OutputConfig, StreamConfig

__all__ = ["run_options", "configs_from_options", "scale_options"]


def run_options(f):
    """The options of a segmentation run (model, patches, TTA, bands, output product, registration)."""
    for option in reversed([
        _model_option,
        _patch_options,
        config_option("InferenceConfig", "batch_size", "--batch-size", type=int, help="Patches per network call."),
        config_option("OutputConfig", "kind", "--output", "output",
                      help="uint8 class map with a colour table, or probability per class."),
        config_option("OutputConfig", "probability_dtype", "--probability-dtype",
                      help="Probabilities as float32 (nodata NaN) or uint8 scaled 0-255 (a quarter of the disk; "
                          "nodata in the mask band)."),
        _cog,
        config_option("InferenceConfig", "window", "--window",
                      help="Blending window (default: the model's recommendation, else spline)."),
        config_option("InferenceConfig", "quality", "--quality",
                      help="Preset: standard predicts each patch once; best adds the model's test-time "
                          "augmentation (all 8 rotations and mirrors where it records none): on Dubai tile 7 "
                          "+0.012 mean IoU at about 8x the time. --tta/--tta-mean override it."),
        config_option("InferenceConfig", "tta", "--tta",
                      help="Test-time augmentation: mirror, or all 8 rotations and mirrors (d4), each undone "
                          "exactly (default: the --quality preset's, none for standard)."),
        config_option("InferenceConfig", "tta_mean", "--tta-mean",
                      help="Averaging of the TTA variants (default: the --quality preset's, arithmetic)."),
        config_option("InferenceConfig", "tta_device", "--tta-device",
                      help="Run the TTA rotations in the Keras graph (on the accelerator) or on the host."),
        config_option("InferenceConfig", "runtime", "--runtime",
                      help="What executes the network: auto = OpenVINO on a CPU where it is installed (faster, "
                          "same probabilities within 1e-4), else Keras on its backend and device; an ONNX model "
                          "runs in OpenVINO or ONNX Runtime (onnxruntime; with CUDA where onnxruntime-gpu has it)."),
        config_option("InferenceConfig", "precision", "--precision",
                      help="Compute precision of the network; bfloat16/float16 for accelerators (and CPUs "
                          "with AMX or AVX512-BF16 under OpenVINO)."),
        _bands_option,
        _strip_rows_option,
        _overwrite,
        _co_option,
        _reference,
        _registration_options(),
        _input_scale_option,
        _resample_option,
        config_option("OutputConfig", "grid", "--grid",
                      help="The grid of the products of a resampled run: the scene's (probabilities resampled "
                          "back before the class map; same CRS, transform and size as the scene) or the "
                          "model's pixel size."),
        click.option("--force", is_flag=True,
                     help="Predict even when the scene's values are far outside the model's training domain."),
    ]):
        f = option(f)
    return f


def scale_options(f):
    """``--workers``, ``--scheduler``, ``--parts``: where and in how many pieces the work runs."""
    f = click.option("--parts", default="auto", show_default=True, metavar="N|auto",
                     help="Cut each scene into N row bands (parts), each computed alone and journalled, so a "
                          "crash costs one part; auto: one part up to 16 strips, else parts of 8 strips.")(f)
    f = click.option("--worker-timeout", type=click.FloatRange(min=0), default=WORKER_TIMEOUT, show_default=True,
                     metavar="SECONDS",
                     help="With --scheduler: how long to wait for a first worker where the scheduler has none "
                          "(tiler says that it waits, and then what to start).")(f)
    return _cluster_options("the parts")(f)


def configs_from_options(kw: dict):
    """``(InferenceConfig, StreamConfig, OutputConfig)`` from the parsed :func:`run_options`: each config takes
    the options named as its fields (``--output`` is :attr:`OutputConfig.kind`)."""
    def pick(cls, **renamed):
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in kw.items() if k in names}
        values.update({field: kw[option] for field, option in renamed.items()})
        return cls(**values)

    kw = dict(kw, bands=_int_list(kw["bands"]), input_scale=list(kw["input_scale"]),
              creation_options=list(kw["creation_options"]))
    return pick(InferenceConfig), pick(StreamConfig), pick(OutputConfig, kind="output")
