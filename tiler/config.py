"""Frozen, validated option values of a run: inference, streaming, output, polygons.

Each is a frozen dataclass validated on construction, with ``to_dict`` /
``from_dict`` for JSON, so that a run report, a resumable journal and a
hyperparameter search can store options and compare them for equality. The
entry points (:func:`tiler.run_scene`, the CLI) build them once; everything
below takes them as they are.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

from tiler.errors import PlanError, UsageError

if TYPE_CHECKING:  # NumPy loads with it: the command line builds its options from this module
    from tiler.domain import InputScale

__all__ = ["InferenceConfig", "StreamConfig", "OutputConfig", "VectorConfig", "split_options", "run_configs",
           "choices", "option_default",
           "OUTPUT_KINDS", "PROBABILITY_DTYPES", "REGISTRATION", "CONNECTIVITY",
           "WORKER_TIMEOUT"]

#: Raster products of ``tiler run``: a uint8 class map, or per-class probabilities.
OUTPUT_KINDS = ("class", "probability")
#: Probability encodings: float32 (nodata NaN), or uint8 scaled 0-255 (value / 255,
#: nodata in the internal mask): a quarter of the disk.
PROBABILITY_DTYPES = ("float32", "uint8")
#: Registration modes: estimate and apply (``auto``: on a product its producer co-registered,
#: Sentinel-2 or Landsat, a group with too few usable windows keeps its georeferenced place, with a
#: warning); refuse any group that cannot be registered (``strict``); or place band groups by their
#: georeferencing only (``off``).
REGISTRATION = ("auto", "strict", "off")
#: Seconds ``--scheduler`` waits for a first worker where the scheduler has none (``--worker-timeout``): long
#: enough for a deployment to start its workers (a Kubernetes pod pulling its image, a batch queue's short
#: wait), short enough that a scheduled job whose workers are gone fails the same hour, with what to start.
WORKER_TIMEOUT = 300.0
#: Pixel connectivity of polygon regions: edge neighbours (4) or edge and corner (8).
CONNECTIVITY = (4, 8)
#: Default scene rows per strip (rounded to whole strides).
DEFAULT_STRIP_ROWS = 512
#: Default output columns per column band: bounds memory for very wide scenes
#: (DESIGN.md invariant 4); a multiple of the 512-pixel output tile.
DEFAULT_BAND_WIDTH = 8192
#: GDAL block cache for a run, in MB: enough for a strip of input tiles, small
#: enough that memory stays flat in scene size.
DEFAULT_GDAL_CACHE_MB = 64


#: Where the values of each choice-valued option field are registered: ``(config class name, field)`` ->
#: ``(module, attribute)``. The config checks its values against these registries and ``tiler``'s options
#: take their choices from them (:func:`choices`), so that a new window, runtime or TTA is offered by the
#: command line as soon as its registry has it. Imported on use: the engine's modules load when needed.
_REGISTRIES: dict[tuple[str, str], tuple[str, str]] = {
    ("InferenceConfig", "window"): ("tiler.blend", "WINDOWS"),
    ("InferenceConfig", "tta"): ("tiler.blend", "TTA_TRANSFORMS"),
    ("InferenceConfig", "tta_mean"): ("tiler.blend", "TTA_MEANS"),
    ("InferenceConfig", "tta_device"): ("tiler.model", "TTA_DEVICES"),
    ("InferenceConfig", "runtime"): ("tiler.model", "RUNTIMES"),
    ("InferenceConfig", "precision"): ("tiler.model", "PRECISIONS"),
    ("InferenceConfig", "registration"): ("tiler.config", "REGISTRATION"),
    ("InferenceConfig", "registration_model"): ("tiler.registration", "MODELS"),
    ("InferenceConfig", "resample"): ("tiler.scene", "RESAMPLE_MODES"),
    ("InferenceConfig", "quality"): ("tiler.model", "QUALITY"),
    ("OutputConfig", "kind"): ("tiler.config", "OUTPUT_KINDS"),
    ("OutputConfig", "grid"): ("tiler.scene", "OUTPUT_GRIDS"),
    ("OutputConfig", "probability_dtype"): ("tiler.config", "PROBABILITY_DTYPES"),
    ("VectorConfig", "connectivity"): ("tiler.config", "CONNECTIVITY"),
}


#: The :class:`InferenceConfig` fields that are :class:`tiler.model.Predictor`'s parameters.
NETWORK_FIELDS = ("batch_size", "tta", "tta_mean", "tta_device", "runtime", "precision")


def choices(config: Union[type, str], name: str) -> tuple:
    """The values a choice-valued option field accepts, from the registry that owns them.

    Parameters
    ----------
    config : type or str
        A config class (:class:`InferenceConfig`, :class:`OutputConfig`, :class:`VectorConfig`) or its name.
    name : str
        The field.

    Returns
    -------
    tuple
        The registry's keys (names of windows, TTA transforms, runtimes, ...), in its order.

    Raises
    ------
    KeyError
        For a field that is not choice-valued.
    """

    module, attribute = _REGISTRIES[(config if isinstance(config, str) else config.__name__, name)]
    return tuple(getattr(importlib.import_module(module), attribute))


def option_default(config: type, name: str) -> Any:
    """A config field's default (what an option left unset means), from the dataclass itself.

    Raises
    ------
    KeyError
        For an unknown field.
    """
    field = {f.name: f for f in fields(config)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    raise KeyError(f"{config.__name__}.{name} has no default")


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


class _Config:
    """``to_dict`` / ``from_dict`` shared by the option values."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: plain numbers, strings, lists and ``None``."""
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if hasattr(v, "to_dict"):  # an InputScale
                v = v.to_dict()
            elif callable(v):
                v = getattr(v, "__name__", "callable")
            elif isinstance(v, tuple):
                v = [list(x) if isinstance(x, tuple) else x for x in v]
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """The value of a :meth:`to_dict` result (unknown keys are an error).

        Raises
        ------
        UsageError
            For an unknown key or an invalid value.
        """
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise UsageError(f"unknown {cls.__name__} option(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(names))}")
        kwargs = dict(data)
        if isinstance(kwargs.get("input_scale"), Mapping):
            from tiler.domain import InputScale

            kwargs["input_scale"] = InputScale(tuple(kwargs["input_scale"]["scale"]),
                                               tuple(kwargs["input_scale"]["offset"]))
        return cls(**kwargs)

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class InferenceConfig(_Config):
    """How patches are cut, predicted and blended, and how the scene is prepared.

    Parameters
    ----------
    patch_size : int, optional
        Patch side in pixels, a multiple of ``2**depth`` of the model; default
        the model's recommendation, else its training patch size.
    overlap : float, optional
        Fraction of a patch shared with its neighbour, in [0, 1); default the
        model's recommendation, else 0.5.
    batch_size : int, default 8
        Patches per network call.
    window : str or callable, optional
        Blending window (:data:`tiler.blend.WINDOWS`) or a function of the
        same signature; default the model's recommendation, else ``spline``.
        :meth:`for_model` fills the three from a model's metadata.
    quality : {"standard", "best"}, default "standard"
        Named preset (:data:`tiler.model.QUALITY`) of the TTA and its mean where ``tta`` and ``tta_mean`` are
        unset: ``best`` is the model's own test-time augmentation (:meth:`tiler.model.ModelInfo.quality_tta`),
        else :data:`tiler.model.QUALITY_TTA`.
    tta : {"none", "flip", "d4"}, optional
        Test-time augmentation; default the quality preset's.
    tta_mean : {"arithmetic", "geometric"}, optional
        Mean of the TTA variants; default the quality preset's.
    tta_device : {"graph", "host"}
    runtime : {"auto", "keras", "openvino"}
        What executes the network (:mod:`tiler.model._runtime`): ``auto`` is
        OpenVINO on a CPU where it is installed, else Keras.
    precision : {"float32", "bfloat16", "float16"}
        Compute precision of the network; float32 (the reference) by default,
        the others for accelerators.
    bands : tuple of int, optional
        1-based scene band per model channel; default matched by name.
    input_scale : InputScale, optional
        ``--input-scale`` (a sequence of ``"SCALE[,OFFSET]"`` is parsed).
    force : bool, default False
        Predict although the scene is outside the model's training domain.
    reference : str, optional
        Band group whose grid is the output grid.
    registration : {"auto", "strict", "off"}
        See :data:`REGISTRATION`.
    registration_model : {"auto", "translation", "affine"}
    registration_grid : int, default 8
        Most registration windows per side (:func:`tiler.registration.register_scene`).
    registration_window : int, default 128
        Largest registration window side, pixels of the coarser group of a pair.
    resample : {"auto", "off"}, default "auto"
        ``auto``: where the model records the pixel size of its training imagery and the scene's differs by
        more than :data:`tiler.scene.RESAMPLE_TOLERANCE`, run on a processing grid at the model's pixel size
        (:func:`tiler.scene.processing_grid`); ``off``: on the scene's grid, with a warning.

    Raises
    ------
    UsageError, PlanError
        For an invalid value, naming it.
    """

    patch_size: Optional[int] = None
    overlap: Optional[float] = None
    batch_size: int = 8
    window: Union[None, str, Callable] = None
    quality: str = "standard"
    tta: Optional[str] = None
    tta_mean: Optional[str] = None
    tta_device: str = "graph"
    runtime: str = "auto"
    precision: str = "float32"
    bands: Optional[tuple[int, ...]] = None
    input_scale: Optional[InputScale] = None
    force: bool = False
    reference: Optional[str] = None
    registration: str = "auto"
    registration_model: str = "auto"
    registration_grid: int = 8
    registration_window: int = 128
    resample: str = "auto"

    def __post_init__(self) -> None:
        if self.overlap is not None and not (isinstance(self.overlap, (int, float)) and 0 <= self.overlap < 1):
            raise PlanError(f"overlap must be a fraction in [0, 1), got {self.overlap!r}; e.g. 0.5 (half a patch)")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise PlanError(f"batch size must be >= 1, got {self.batch_size!r}")
        if self.patch_size is not None and (not isinstance(self.patch_size, int) or self.patch_size < 1):
            raise PlanError(f"patch size must be a positive integer, got {self.patch_size!r}")
        from tiler.registration import MIN_WINDOW

        for name in ("window", "quality", "tta", "tta_mean", "tta_device", "runtime", "precision", "registration",
                     "registration_model", "resample"):
            value = getattr(self, name)
            if value is not None and (name != "window" or isinstance(value, str)):  # a window may be a function
                _choice(name.replace("_", " ").replace("tta", "TTA"), value, choices(InferenceConfig, name))
        if not isinstance(self.registration_grid, int) or self.registration_grid < 2:
            raise PlanError("registration grid must be an integer >= 2 (windows per side, --registration-grid), "
                            f"got {self.registration_grid!r}")
        if not isinstance(self.registration_window, int) or self.registration_window < MIN_WINDOW:
            raise PlanError(f"registration window must be an integer >= {MIN_WINDOW} (pixels, "
                            f"--registration-window), got {self.registration_window!r}")
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
        if self.input_scale is not None:
            from tiler.domain import InputScale

            if not isinstance(self.input_scale, InputScale):
                object.__setattr__(self, "input_scale", InputScale.parse(self.input_scale))

    def network_options(self) -> dict[str, Any]:
        """The options a :class:`tiler.model.Predictor` is built from (batch size, TTA, runtime, precision):
        ``Predictor(model, **config.network_options())``; equal dicts make the same predictor. A TTA left
        unset is the quality preset's (:data:`tiler.model.QUALITY_TTA`; :meth:`for_model` takes the model's
        own)."""
        presets = getattr(importlib.import_module("tiler.model"), "QUALITY_TTA")  # the model's layer, on use
        return {name: getattr(self._with_tta(presets[self.quality]), name) for name in NETWORK_FIELDS}

    def _with_tta(self, preset: Mapping[str, str]) -> "InferenceConfig":
        if self.tta is not None and self.tta_mean is not None:
            return self
        return dataclasses.replace(self, tta=preset["tta"] if self.tta is None else self.tta,
                                   tta_mean=preset["tta_mean"] if self.tta_mean is None else self.tta_mean)

    def for_model(self, info) -> "InferenceConfig":
        """This config with the patch size, overlap, window and TTA the user left unset taken from the model.

        Parameters
        ----------
        info : tiler.model.ModelInfo

        Returns
        -------
        InferenceConfig
            ``patch_size``, ``overlap`` and ``window`` set: the given value,
            else the model's recommendation (:meth:`tiler.model.ModelInfo.recommended`); ``tta`` and
            ``tta_mean``: the given value, else the model's for the quality preset
            (:meth:`tiler.model.ModelInfo.quality_tta`).
        """
        patch, overlap, window = info.recommended()
        return dataclasses.replace(
            self._with_tta(info.quality_tta(self.quality)),
            patch_size=patch if self.patch_size is None else self.patch_size,
            overlap=overlap if self.overlap is None else self.overlap,
            window=window if self.window is None else self.window)


@dataclass(frozen=True)
class StreamConfig(_Config):
    """How the scene is streamed: strip height, column-band width, caches.

    Parameters
    ----------
    strip_rows : int, default 512
        Scene rows emitted per strip (rounded to whole strides).
    band_width : int, default 8192
        Output columns per column band (bounds memory for wide scenes).
    gdal_cache_mb : int, default 64
        GDAL block cache for the run, in MB.
    prefetch : bool, default True
        Read the next strip in a background thread.

    Raises
    ------
    PlanError
        For a size below 1.
    """

    strip_rows: int = DEFAULT_STRIP_ROWS
    band_width: int = DEFAULT_BAND_WIDTH
    gdal_cache_mb: int = DEFAULT_GDAL_CACHE_MB
    prefetch: bool = True

    def __post_init__(self) -> None:
        for name in ("strip_rows", "band_width", "gdal_cache_mb"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise PlanError(f"{name.replace('_', ' ')} must be an integer >= 1, got {v!r}")

    @property
    def gdal_env(self) -> dict[str, int]:
        """The GDAL configuration of a run, for ``rasterio.Env(**streaming.gdal_env)``.

        Returns
        -------
        dict
            ``GDAL_CACHEMAX``: :attr:`gdal_cache_mb` in **bytes**. rasterio passes an integer
            ``GDAL_CACHEMAX`` to ``GDALSetCacheMax64``, whose unit is bytes (GDAL's C API), not to the
            configuration option, where a number below 100000 means MB: ``rasterio.Env(GDAL_CACHEMAX=64)``
            is a cache of 64 bytes, which decodes a pixel-interleaved tile again for each band read. rasterio
            puts the previous cache size back when the ``Env`` closes.
        """
        return {"GDAL_CACHEMAX": self.gdal_cache_mb * 2**20}


@dataclass(frozen=True)
class OutputConfig(_Config):
    """The raster product of a run and how its file is written.

    Parameters
    ----------
    kind : {"class", "probability"}, default "class"
        ``class``: uint8 class index with a colour table, nodata 255.
        ``probability``: one band per class.
    probability_dtype : {"float32", "uint8"}, default "float32"
        float32 (nodata NaN), or uint8 scaled 0-255 (probability = value / 255,
        recorded as the band scale; nodata in the internal mask band).
    creation_options : tuple of (str, str), default ()
        GeoTIFF creation options overriding the defaults (``--co``); a mapping
        or ``NAME=VALUE`` strings are accepted and normalised.
    cog : bool, default False
        Write a Cloud-Optimized GeoTIFF (internal overviews, GDAL's COG driver).
    grid : {"scene", "model"}, default "scene"
        Where a run on a processing grid (:func:`tiler.scene.processing_grid`) writes its products: on the
        scene's reference grid (probabilities resampled back before the class map), or on the processing grid
        at the model's pixel size (``--grid model``).

    Raises
    ------
    UsageError
        For an invalid value.
    """

    kind: str = "class"
    probability_dtype: str = "float32"
    creation_options: tuple[tuple[str, str], ...] = ()
    cog: bool = False
    grid: str = "scene"

    def __post_init__(self) -> None:
        _choice("output", self.kind, choices(OutputConfig, "kind"))
        _choice("grid", self.grid, choices(OutputConfig, "grid"))
        _choice("probability dtype", self.probability_dtype, choices(OutputConfig, "probability_dtype"))
        co = self.creation_options
        if isinstance(co, Mapping):
            pairs = co.items()
        else:
            from tiler.output import parse_creation_options

            items = list(co or ())
            pairs = (parse_creation_options(items).items() if all(isinstance(i, str) for i in items)
                     else [tuple(i) for i in items])
        object.__setattr__(self, "creation_options", tuple((str(k).upper(), str(v)) for k, v in pairs))

    @property
    def dtype(self) -> str:
        """The raster's data type."""
        return "uint8" if self.kind == "class" else self.probability_dtype


@dataclass(frozen=True)
class VectorConfig(_Config):
    """Polygons of a class map (``--vector``, ``tiler vectorize``).

    Parameters
    ----------
    classes : tuple of str, optional
        Class names to export; default every class but the background class
        the model names (:attr:`tiler.labels.LabelScheme.background`), or all.
    connectivity : {4, 8}, default 4
        Pixels joined through edges only (4) or edges and corners (8).
    min_area : float, default 0
        Regions of smaller area are dropped: m² where the CRS is projected,
        geodesic m² where it is geographic, else pixels.
    simplify : float, default 0
        Coverage simplification tolerance in CRS units (pixels where not
        georeferenced); shared edges stay shared (no gaps, no overlaps).
    min_probability : float, default 0
        Regions whose mean probability of their class is below this are
        dropped (regions without probabilities are kept).

    Raises
    ------
    UsageError
        For an invalid value.
    """

    classes: Optional[tuple[str, ...]] = None
    connectivity: int = 4
    min_area: float = 0.0
    simplify: float = 0.0
    min_probability: float = 0.0

    def __post_init__(self) -> None:
        _choice("connectivity", self.connectivity, choices(VectorConfig, "connectivity"))
        if not isinstance(self.min_probability, (int, float)) or not 0 <= self.min_probability <= 1:
            raise UsageError(f"--min-probability must be a probability in [0, 1], got {self.min_probability!r}")
        for name in ("min_area", "simplify"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a number >= 0, got {v!r}")
        if self.classes is not None:
            names = self.classes.split(",") if isinstance(self.classes, str) else self.classes
            names = tuple(n.strip() for n in names if n.strip())
            if not names:
                raise UsageError("--classes names no class; give e.g. --classes building,water")
            object.__setattr__(self, "classes", names)


def run_configs(options: Mapping[str, Any], inference=None, streaming=None, output=None, polygons=None) -> list:
    """The four config values of a segmentation run: the ones given (or the defaults), with ``options`` applied.

    Parameters
    ----------
    options : mapping
        Flat keyword options (see :func:`split_options`).
    inference, streaming, polygons : config value, optional
    output : OutputConfig or {"class", "probability"}, optional
        A string is the kind (``OutputConfig(kind=output)``).

    Returns
    -------
    list
        ``[InferenceConfig, StreamConfig, OutputConfig, VectorConfig]``.

    Raises
    ------
    UsageError
        For an option no config has.
    """
    if isinstance(output, str):
        output = OutputConfig(kind=output)
    return split_options(options, inference or InferenceConfig(), streaming or StreamConfig(),
                         output or OutputConfig(), polygons or VectorConfig())


def split_options(options: Mapping[str, Any], *configs) -> list:
    """Route flat keyword options to the config values that own them.

    Parameters
    ----------
    options : mapping
        ``name -> value`` (e.g. ``overlap=0.25, strip_rows=64``); the output
        kind may be given as ``output``.
    *configs : config values
        The starting values (e.g. defaults); each gets the options that are
        its fields.

    Returns
    -------
    list
        The configs with the options applied, in the order given.

    Raises
    ------
    UsageError
        For an option no config has.
    """
    options = dict(options)
    if "output" in options:
        options["kind"] = options.pop("output")
    out = []
    for cfg in configs:
        mine = {f.name for f in fields(cfg)}
        changes = {k: options.pop(k) for k in list(options) if k in mine}
        out.append(cfg.replace(**changes) if changes else cfg)
    if options:
        known = sorted({f.name for cfg in configs for f in fields(cfg)})
        raise UsageError(f"unknown option(s) {', '.join(sorted(options))}; known: {', '.join(known)}")
    return out

