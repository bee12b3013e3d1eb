"""Registration: each band group's misalignment against the reference grid.

:func:`register_scene` estimates it by sub-pixel phase correlation on a grid
of windows and returns a :class:`Registration`; :meth:`Registration.apply`
sets the corrections on the scene, which then reads every group through its
correction.
"""

from tiler.registration._fit import Fit, fit_affine, fit_translation
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

__all__ = [
    "register_scene", "Registration", "GroupRegistration", "WindowEstimate", "MODELS",
    "DEFAULT_GRID", "DEFAULT_WINDOW", "DEFAULT_UPSAMPLE", "BandMatch", "match_bands",
    "Fit", "fit_translation", "fit_affine",
]
