"""The inference, streaming and output options ``tiler run`` and ``tiler batch`` share, defined once."""

from __future__ import annotations

from dataclasses import fields

import click

from tiler.cli._common import (
    _cog,
    _int_list,
    _model_option,
    _overwrite,
    _reference,
    _registration_options,
    config_option,
)
from tiler.config import WORKER_TIMEOUT, InferenceConfig, OutputConfig, StreamConfig

__all__ = ["run_options", "configs_from_options", "scale_options"]


def run_options(f):
    """The options of a segmentation run (model, patches, TTA, bands, output product, registration)."""
    for option in reversed([
        _model_option,
        click.option("--patch-size", type=int, default=None,
                     help="Patch side in pixels (default: the model's recommendation, else its training patch)."),
        click.option("--overlap", type=float, default=None,
                     help="Patch overlap as a fraction of the patch, in [0, 1) (default: the model's "
                          "recommendation, else 0.5)."),
        config_option("InferenceConfig", "batch_size", "--batch-size", type=int, help="Patches per network call."),
        config_option("OutputConfig", "kind", "--output", "output",
                      help="uint8 class map with a colour table, or probability per class."),
        config_option("OutputConfig", "probability_dtype", "--probability-dtype",
                      help="Probabilities as float32 (nodata NaN) or uint8 scaled 0-255 (a quarter of the disk; "
                          "nodata in the mask band)."),
        _cog,
        config_option("InferenceConfig", "window", "--window",
                      help="Blending window (default: the model's recommendation, else spline)."),
        config_option("InferenceConfig", "tta", "--tta",
                      help="Test-time augmentation: mirror, or all 8 rotations and mirrors (d4), each undone "
                          "exactly."),
        config_option("InferenceConfig", "tta_mean", "--tta-mean", help="Averaging of the TTA variants."),
        config_option("InferenceConfig", "tta_device", "--tta-device",
                      help="Run the TTA rotations in the Keras graph (on the accelerator) or on the host."),
        config_option("InferenceConfig", "runtime", "--runtime",
                      help="What executes the network: auto = OpenVINO on a CPU where it is installed (faster, "
                          "same probabilities within 1e-4), else Keras on its backend and device; an ONNX model "
                          "runs in OpenVINO or ONNX Runtime (onnxruntime; with CUDA where onnxruntime-gpu has it)."),
        config_option("InferenceConfig", "precision", "--precision",
                      help="Compute precision of the network; bfloat16/float16 for accelerators (and CPUs "
                          "with AMX or AVX512-BF16 under OpenVINO)."),
        click.option("--bands", default=None, help="1-based scene band per model channel, e.g. 3,2,1."),
        config_option("StreamConfig", "strip_rows", "--strip-rows", type=int, help="Scene rows per strip."),
        _overwrite,
        click.option("--co", "creation_options", multiple=True, metavar="NAME=VALUE",
                     help="GeoTIFF creation option (repeatable), e.g. --co COMPRESS=ZSTD."),
        _reference,
        _registration_options(),
        click.option("--input-scale", "input_scale", multiple=True, metavar="SCALE[,OFFSET]",
                     help="Map scene values into the model's range before its normalisation: value * SCALE + "
                          "OFFSET. Once for all band channels, or once per model channel (e.g. 0.0625 for 12-bit "
                          "data and an 8-bit model)."),
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
    f = click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Run the parts on an existing dask cluster (tcp://host:8786); its workers must see the "
                          "scenes, the model and the output folder at the same paths.")(f)
    f = click.option("--workers", type=int, default=None,
                     help="Run the parts on a local dask cluster of N worker processes.")(f)
    return f


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
