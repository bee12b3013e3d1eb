"""Cloud and cloud-shadow masks for Sentinel-2 and Landsat: DLR's ``ukis-csmask`` U-Nets, by name.

``pip install "satellite-tiler[clouds]"`` installs ``ukis-csmask`` (Apache-2.0,
German Aerospace Center, https://github.com/dlr-eoc/ukis-csmask). Its four ONNX
networks (U-Net, EfficientNet-B4 encoder) are used where the package installed
them, never copied, and described from the package's own JSON beside each file
(``data.dataset_statistics``: band names, per-band mean and standard deviation;
``data.target_size``) and its documentation (``ukis_csmask/mask.py``,
``CSmask``): inputs are top-of-atmosphere (L1C) or surface (L2A) reflectance in
[0, 1] at about 30 m, bands blue, green, red, NIR (and SWIR-1, SWIR-2 for the
6-band models), normalised ``(x - mean) / std``, tiled in 256 x 256 patches
(the package overlaps them by 0.2), NCHW; the output is three logits: 0 clear
(the package's "background"), 1 cloud, 2 cloud shadow, to which the package
applies a softmax.

tiler registers them through its own ``tiler.models`` entry point
(:mod:`tiler.model._registry`) as ``clouds-s2-l1c-4b``, ``clouds-s2-l1c-6b``,
``clouds-s2-l2a-4b`` and ``clouds-s2-l2a-6b``; the L1C models were trained on
Sentinel-2 and Landsat top-of-atmosphere reflectance (the package masks
Sentinel-2, Landsat-8, -7 and -5 with them), and ``clouds-landsat-4b`` /
``clouds-landsat-6b`` name the L1C ones for Landsat scenes.
"""

from __future__ import annotations

import importlib.util
import json
import os

__all__ = ["models", "CLASSES", "COLOURS", "PIXEL_SIZE_M"]

#: The package's class ids 0, 1, 2.
CLASSES = ("clear", "cloud", "cloud_shadow")
#: Display colours: clear green (Okabe-Ito bluish green), clouds white, shadows dark grey.
COLOURS = ("#009E73", "#FFFFFF", "#4D4D4D")
#: "For better performance requires image bands to be in approximately 30 m resolution" (``CSmask`` docstring).
PIXEL_SIZE_M = 30.0
#: The package's band names and tiler's.
_BANDS = {"blue": "blue", "green": "green", "red": "red", "nir": "nir", "swir16": "swir1", "swir22": "swir2"}
#: The package tiles with 20 % overlap (``tile_array(..., overlap=0.2)`` in ``CSmask._csm``).
OVERLAP = 0.2
#: Half-width of the recorded training domain in standard deviations (the package publishes mean and std,
#: not percentiles; about the 2nd-98th percentile of a normal distribution).
_DOMAIN_STDS = 2.0


def _folder():
    spec = importlib.util.find_spec("ukis_csmask")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _describe(onnx_path: str):
    """The :class:`~tiler.model.ModelInfo` of one of the package's networks, from its JSON."""
    from tiler.model._info import ModelInfo

    with open(os.path.splitext(onnx_path)[0] + ".json", encoding="utf-8") as f:
        doc = json.load(f)
    stats = doc["data"]["dataset_statistics"]
    mean, std = stats["img"]
    channels = [_BANDS[b] for b in stats["band_names"]]
    size = int(doc["data"]["target_size"][0])
    domain = {"channels": [{"name": c, "dtype": "float32", "low": max(0.0, m - _DOMAIN_STDS * s),
                            "high": m + _DOMAIN_STDS * s} for c, m, s in zip(channels, mean, std)],
              "pixel_size": PIXEL_SIZE_M, "percentiles": [2.3, 97.7]}
    return ModelInfo(
        channels=tuple(channels), classes=CLASSES, colours=COLOURS, offset=tuple(mean), scale=tuple(std),
        activation="softmax", patch_size=size, depth=0, domain=domain,
        inference={"patch_size": size, "overlap": OVERLAP, "window": "spline"},
        network={"format": "onnx", "layout": "NCHW", "output": "logits", "input": "input"},
        training={"source": "ukis-csmask " + doc["model"]["version"] + " (German Aerospace Center, Apache-2.0), "
                            "https://github.com/dlr-eoc/ukis-csmask",
                  "architecture": f"{doc['model']['decoder_name']} / {doc['model']['encoder_name']}",
                  "described_from": os.path.basename(os.path.splitext(onnx_path)[0] + ".json"),
                  "pixel_size_note": "about 30 m (the package's documentation)"})


def models() -> list:
    """The cloud-mask models where ``ukis-csmask`` is installed (the ``tiler.models`` entry point)."""
    from tiler.model._registry import NamedModel

    folder = _folder()
    if folder is None:
        return []
    out = []
    names = [("clouds-s2-l1c-4b", "model_4b_l1c", "Sentinel-2 L1C (top-of-atmosphere reflectance), 4 bands"),
             ("clouds-s2-l1c-6b", "model_6b_l1c", "Sentinel-2 L1C (top-of-atmosphere reflectance), 6 bands"),
             ("clouds-s2-l2a-4b", "model_4b_l2a", "Sentinel-2 L2A (surface reflectance), 4 bands"),
             ("clouds-s2-l2a-6b", "model_6b_l2a", "Sentinel-2 L2A (surface reflectance), 6 bands"),
             ("clouds-landsat-4b", "model_4b_l1c", "Landsat top-of-atmosphere reflectance, 4 bands"),
             ("clouds-landsat-6b", "model_6b_l1c", "Landsat top-of-atmosphere reflectance, 6 bands")]
    for name, stem, what in names:
        path = os.path.join(folder, stem + ".onnx")
        if not os.path.isfile(path):
            continue
        out.append(NamedModel(
            name=name, path=path, licence="Apache-2.0 (ukis-csmask, German Aerospace Center)",
            description=f"clear / cloud / cloud shadow, {what}, about 30 m",
            source="DLR ukis-csmask (U-Net, EfficientNet-B4 encoder), https://github.com/dlr-eoc/ukis-csmask",
            describe=lambda path=path: _describe(path)))
    return out
