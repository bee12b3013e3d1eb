"""Scenes: one raster, a scene manifest, a local STAC Item, or a sensor folder of band groups.

See :func:`open_scene`. Band groups at other resolutions are read through a
resampling onto the reference grid; :mod:`tiler.registration` estimates their
misalignment.
"""

from tiler.scene._bands import RESAMPLING_DOWN, RESAMPLING_UP, SPECTRAL_RANGES, Band, BandGroup
from tiler.scene._cloudmask import CLOUD_MASK_KINDS, CloudMask
from tiler.scene._layouts import LANDSAT_BANDS, SENTINEL2_BANDS, WORLDVIEW3_BANDS, Layout, detect_layout
from tiler.scene._manifest import read_manifest
from tiler.scene._paths import scene_inputs
from tiler.scene._scene import BandMapping, GroupGrid, Scene, open_scene
from tiler.scene._stac import read_stac_item, split_scene, stac_items

__all__ = [
    "scene_inputs",
    "split_scene",
    "Scene", "open_scene", "BandMapping", "GroupGrid", "Band", "BandGroup", "Layout",
    "detect_layout", "read_manifest", "read_stac_item", "stac_items", "SPECTRAL_RANGES", "RESAMPLING_UP",
    "RESAMPLING_DOWN",
    "SENTINEL2_BANDS", "LANDSAT_BANDS", "WORLDVIEW3_BANDS", "CloudMask", "CLOUD_MASK_KINDS",
]
