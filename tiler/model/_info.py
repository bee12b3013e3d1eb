"""A model's metadata: :class:`ModelInfo`, what tiler needs to know to run a network (channels,
normalisation, classes, patch grid, recommended inference settings, training domain), stored as
``tiler.json`` in a ``.keras`` archive or as an ONNX model's metadata."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from tiler._version import __version__
from tiler.blend import DEFAULT_OVERLAP, DEFAULT_WINDOW, TTA_MEANS, TTA_TRANSFORMS, WINDOWS
from tiler.errors import ModelFileError, PlanError
from tiler.labels import LabelScheme

__all__ = ["METADATA_NAME", "INFERENCE_KEYS", "QUALITY", "QUALITY_TTA", "ModelInfo"]

#: Name of tiler's metadata entry inside the ``.keras`` zip archive. Keras
#: ignores archive members it does not know, so the file stays a valid Keras
#: model for any Keras 3 program.
METADATA_NAME = "tiler.json"


_FORMAT_VERSION = 1
#: Keys of a model's recommended inference settings (:attr:`ModelInfo.inference`).
INFERENCE_KEYS = ("patch_size", "overlap", "window", "best")
#: Keys of the ``best`` quality preset a model may record (``inference["best"]``).
BEST_KEYS = ("tta", "tta_mean")
#: Named inference presets (``tiler run --quality``): ``standard`` predicts each patch once; ``best`` adds
#: test-time augmentation, the model's own (:meth:`ModelInfo.quality_tta`) where it records it.
QUALITY = ("standard", "best")
#: The TTA and its mean of each preset where the model records none: ``best`` is all eight rotations and
#: mirrors (D4), averaged. On Dubai tile 7 (never trained on) it raises the bundled model's mean IoU by more
#: than 0.01 (0.606 -> 0.618) at about 8x the time of a run (docs/benchmarks.md, "Quality presets").
QUALITY_TTA = {"standard": {"tta": "none", "tta_mean": "arithmetic"},
               "best": {"tta": "d4", "tta_mean": "arithmetic"}}


@dataclass(frozen=True)
class ModelInfo:
    """What a model expects and produces, stored beside its weights.

    Parameters
    ----------
    channels : tuple of str
        Ordered input channel names (band names such as ``red``, later index
        names such as ``ndwi``).
    classes : tuple of str
        Output class names, in output order.
    colours : tuple of str
        ``"#RRGGBB"`` per class, for the output colour table.
    offset, scale : tuple of float
        Per-channel normalisation: the model sees ``(x - offset) / scale``
        where ``x`` is the channel as read from the scene.
    activation : {"softmax", "sigmoid"}
        Single-label or multi-label output.
    patch_size : int
        Training patch side in pixels (the default inference patch size).
    depth : int
        Down-sampling steps: inference patch sides must divide by ``2**depth``.
    tiler_version : str
        Version of tiler that wrote the file.
    training : dict
        Free-form record of how the model was trained (command, data, scores).
    domain : dict or None
        The domain of the training inputs
        (:meth:`tiler.domain.InputDomain.to_dict`: per channel the dtype and
        1st/99th percentile, and the pixel size in metres); None in files
        written before tiler recorded it, whose inputs cannot be checked.
    inference : dict or None
        The inference settings the model recommends, ``{"patch_size": int,
        "overlap": float, "window": str, "best": {"tta": str, "tta_mean": str}}``
        (any subset): ``tiler run`` uses them where the user gives none
        (:meth:`recommended`; ``best`` is the TTA of ``--quality best``,
        :meth:`quality_tta`). None: the training patch size, overlap 0.5, the
        spline window and :data:`QUALITY_TTA`.
    network : dict or None
        Where the network is not a Keras model: ``{"format": "onnx", "layout":
        "NCHW" | "NHWC", "output": "probabilities" | "logits", "input": name}``
        (:mod:`tiler.model._onnx`). None: the ``.keras`` file's own network.
    """

    channels: tuple[str, ...]
    classes: tuple[str, ...]
    colours: tuple[str, ...]
    offset: tuple[float, ...]
    scale: tuple[float, ...]
    activation: str = "softmax"
    patch_size: int = 256
    depth: int = 4
    tiler_version: str = __version__
    training: Mapping[str, Any] = field(default_factory=dict)
    domain: Optional[Mapping[str, Any]] = None
    inference: Optional[Mapping[str, Any]] = None
    network: Optional[Mapping[str, Any]] = None

    @property
    def is_onnx(self) -> bool:
        """Whether the network is an ONNX graph (run by OpenVINO or ONNX Runtime, never by Keras)."""
        return bool(self.network) and self.network.get("format") == "onnx"

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n == 0:
            raise ModelFileError("a model needs at least one input channel")
        if len(self.offset) != n or len(self.scale) != n:
            raise ModelFileError(
                f"normalisation has {len(self.offset)} offsets and {len(self.scale)} scales "
                f"for {n} channels {list(self.channels)}; give one of each per channel"
            )
        if any(not np.isfinite(s) or s == 0 for s in self.scale):
            raise ModelFileError(f"normalisation scales must be finite and non-zero, got {self.scale}")
        LabelScheme(tuple(self.classes), tuple(self.colours))  # validates names and colours
        if self.activation not in ("softmax", "sigmoid"):
            raise ModelFileError(f"activation must be 'softmax' or 'sigmoid', got {self.activation!r}")
        if self.patch_size % (2 ** self.depth):
            raise ModelFileError(
                f"training patch size {self.patch_size} is not divisible by 2**depth = {2 ** self.depth}"
            )
        if self.inference:
            self._check_inference(self.inference)
        if self.domain:
            try:
                dom = self.input_domain
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelFileError(f"the model's training domain is malformed ({exc})") from None
            if tuple(c.name for c in dom.channels) != tuple(self.channels):
                raise ModelFileError(f"the training domain names channels {[c.name for c in dom.channels]}, "
                                     f"the model {list(self.channels)}")

    def _check_inference(self, rec: Mapping[str, Any]) -> None:
        unknown = set(rec) - set(INFERENCE_KEYS)
        if unknown:
            raise ModelFileError(f"recommended inference settings have unknown key(s) {sorted(unknown)}; "
                                 f"allowed: {', '.join(INFERENCE_KEYS)}")
        p = rec.get("patch_size", self.patch_size)
        if not isinstance(p, int) or p < 2 ** self.depth or p % (2 ** self.depth):
            raise ModelFileError(f"recommended patch size {p!r} is not a positive multiple of 2**depth = "
                                 f"{2 ** self.depth}")
        o = rec.get("overlap", 0.0)
        if not isinstance(o, (int, float)) or not 0 <= o < 1:
            raise ModelFileError(f"recommended overlap {o!r} is not a fraction in [0, 1)")
        if rec.get("window", "spline") not in WINDOWS:
            raise ModelFileError(f"recommended window {rec.get('window')!r} is not one of {', '.join(WINDOWS)}")
        best = rec.get("best", {})
        if not isinstance(best, Mapping) or set(best) - set(BEST_KEYS) \
                or best.get("tta", "d4") not in TTA_TRANSFORMS or best.get("tta_mean", "arithmetic") not in TTA_MEANS:
            raise ModelFileError(f"recommended best settings {best!r} are not {{'tta': one of "
                                 f"{', '.join(TTA_TRANSFORMS)}, 'tta_mean': one of {', '.join(TTA_MEANS)}}}")

    def recommended(self) -> tuple[int, float, str]:
        """``(patch_size, overlap, window)`` for inference: the file's recommendation, else the defaults.

        Returns
        -------
        tuple of (int, float, str)
            Patch side in pixels, overlap as a fraction of the patch, and the
            blending window name; the training patch size, 0.5 and ``"spline"``
            where the file recommends none.
        """
        rec = dict(self.inference or {})
        return (int(rec.get("patch_size", self.patch_size)), float(rec.get("overlap", DEFAULT_OVERLAP)),
                str(rec.get("window", DEFAULT_WINDOW)))

    def quality_tta(self, quality: str) -> dict[str, str]:
        """The test-time augmentation of a quality preset (``--quality``) for this model.

        Parameters
        ----------
        quality : {"standard", "best"}
            :data:`QUALITY`.

        Returns
        -------
        dict
            ``{"tta": str, "tta_mean": str}``: :data:`QUALITY_TTA` of the preset, for ``best`` updated with
            the model's recorded ``inference["best"]``.

        Raises
        ------
        PlanError
            For an unknown preset.
        """
        if quality not in QUALITY:
            raise PlanError(f"quality must be one of {', '.join(QUALITY)}, got {quality!r}")
        preset = dict(QUALITY_TTA[quality])
        if quality == "best":
            preset.update((self.inference or {}).get("best", {}))
        return preset

    @property
    def input_domain(self):
        """The training domain as a :class:`tiler.domain.InputDomain`, or None if not recorded."""
        from tiler.domain import InputDomain

        return None if not self.domain else InputDomain.from_dict(self.domain)

    @property
    def labels(self) -> LabelScheme:
        """The class scheme (names and colours)."""
        return LabelScheme(tuple(self.classes), tuple(self.colours))

    def to_json(self) -> str:
        """Serialise for the archive."""
        doc = asdict(self)
        doc["format"] = _FORMAT_VERSION
        return json.dumps(doc, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str) -> "ModelInfo":
        """Parse the archive entry written by :meth:`to_json`."""
        try:
            doc = json.loads(text)
            doc.pop("format", None)
            for key in ("channels", "classes", "colours", "offset", "scale"):
                doc[key] = tuple(doc[key])
            return cls(**doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{source}: tiler metadata is malformed ({exc}); re-save the model") from None
