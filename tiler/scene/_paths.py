"""Every file a scene path stands for (the STAC ``collection.json#ITEM`` syntax is :func:`split_scene`).

Used by the output guard (no output may be one of a command's inputs) and by the
fingerprint of a run in parts (the inputs' sizes and modification times).
"""

from __future__ import annotations

import os
from typing import Union

from tiler.errors import TilerError
from tiler.scene._manifest import read_manifest
from tiler.scene._stac import split_scene, stac_asset_paths
from tiler.storage import is_url

__all__ = ["split_scene", "scene_inputs"]

PathLike = Union[str, "os.PathLike[str]"]


def scene_inputs(scene: PathLike) -> list[str]:
    """Every file a scene path stands for: the file, a manifest and its band files, or a folder's files.

    Used by :func:`guard_outputs` to refuse an output that would replace an
    input. Cheap: no raster is opened.

    Parameters
    ----------
    scene : path-like
        A raster, a scene manifest (``.toml``), a STAC Item (``.json``, or
        ``collection.json#ITEM_ID``: the JSON file and the Item's assets) or a
        sensor folder.

    Returns
    -------
    list of str
        Existing files (a folder contributes every file in it and in its
        sub-folders, metadata files included).
    """
    scene = os.fspath(scene)
    if split_scene(scene)[0].lower().endswith(".json"):
        return [p for p in stac_asset_paths(scene) if is_url(p) or os.path.exists(p)]
    if os.path.isdir(scene):
        files = []
        for root, dirs, names in os.walk(scene):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            files.extend(os.path.join(root, n) for n in names)
        return files
    files = [scene]
    if scene.lower().endswith(".toml") and (is_url(scene) or os.path.isfile(scene)):
        try:
            layout = read_manifest(scene)
        except TilerError:
            return files  # the scene check will say what is wrong with it
        files.extend(p for g in layout.groups for p in g.paths)
    return files
