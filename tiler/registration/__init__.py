"""Registration: each band group's misalignment against the reference grid.

:func:`register_scene` estimates it by phase correlation refined by ECC on a
grid of windows and returns a :class:`Registration`; :meth:`Registration.apply`
sets the corrections on the scene, which then reads every group through its
correction.
"""

from tiler.registration._estimate import WindowFit, estimate_window
from tiler.registration._fit import Fit, ModelChoice, fit_affine, fit_translation, select_model
from tiler.registration._match import BandMatch, match_bands
from tiler.registration._register import (
    DEFAULT_GRID,
    DEFAULT_UPSAMPLE,
    DEFAULT_WINDOW,
    MODELS,
    GroupRegistration,
    Registration,
    WindowEstimate,
    register_scene,
)
from tiler.registration._windows import MIN_WINDOW, CloudScreen, WindowLayout, detect_fill, window_layout

__all__ = [
    "register_scene", "Registration", "GroupRegistration", "WindowEstimate", "MODELS",
    "DEFAULT_GRID", "DEFAULT_WINDOW", "DEFAULT_UPSAMPLE", "BandMatch", "match_bands",
    "Fit", "fit_translation", "fit_affine", "select_model", "ModelChoice", "WindowFit", "estimate_window",
    "WindowLayout", "window_layout", "CloudScreen", "detect_fill", "MIN_WINDOW",
]
