"""The scenes of a batch: paths, glob patterns, folders, list files and STAC documents; local or URLs."""

from __future__ import annotations

import glob
import os
import string
from typing import Iterable

from tiler.errors import SceneReadError, TilerError, UsageError
from tiler.scene import detect_layout, split_scene, stac_items
from tiler.storage import glob as glob_objects
from tiler.storage import is_url, join, name_of, read_bytes, redact

__all__ = ["expand_inputs", "output_name", "SCENE_SUFFIXES", "LIST_SUFFIXES"]

#: Files of a folder taken as scenes (rasters GDAL reads, scene manifests, STAC Items).
SCENE_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".png", ".jpg", ".jpeg", ".toml", ".json")
#: A text file listing scenes, one per line (``#`` comments; relative to the file's folder).
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: Fields of ``--name``.
NAME_FIELDS = ("stem", "model")


def _is_sensor_folder(path: str) -> bool:

    try:
        detect_layout(path)
    except TilerError:
        return False
    return True


def _stac(path: str) -> list[str]:

    items = stac_items(path)
    out = []
    if is_url(path):
        for it in items:
            own = it.get_self_href()
            out.append(own if own and own != path and len(items) > 1 and is_url(own) else
                       path if len(items) == 1 else f"{path}#{it.id}")
        return out
    for it in items:
        own = it.get_self_href()
        if own and os.path.abspath(own) != os.path.abspath(path) and os.path.isfile(own):
            out.append(os.path.abspath(own))  # an Item of a Catalog, in its own file
        elif len(items) == 1:
            out.append(os.path.abspath(path))
        else:
            out.append(f"{os.path.abspath(path)}#{it.id}")
    return out


def _folder(path: str) -> list[str]:
    if _is_sensor_folder(path):
        return [os.path.abspath(path)]
    out = []
    for name in sorted(os.listdir(path)):
        if name.startswith("."):
            continue
        p = os.path.join(path, name)
        if os.path.isdir(p):
            if _is_sensor_folder(p):
                out.append(os.path.abspath(p))
        elif name.lower().endswith(".json"):
            try:
                out.extend(_stac(p))
            except SceneReadError:
                continue  # a JSON file that is not STAC (a report, class colours) is no scene
        elif name.lower().endswith(SCENE_SUFFIXES):
            out.extend(_one(p))
    return out


def _list_file(path: str) -> list[str]:
    if is_url(path):
        folder, lines = path.rsplit("/", 1)[0], read_bytes(path, "list of scenes").decode("utf-8").splitlines()
    else:
        folder = os.path.dirname(os.path.abspath(path))
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    out = []
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if is_url(line) or is_url(folder):  # a URL is checked when it is opened
            out.extend(_one(line if is_url(line) else join(folder, line)))
            continue
        p = line if os.path.isabs(line) else os.path.join(folder, line)
        if not os.path.exists(split_scene(p)[0]):
            raise SceneReadError(f"{path}:{n}: scene {line!r} does not exist; fix the list")
        out.extend(_one(p))
    return out


def _one(path: str) -> list[str]:
    if is_url(path):
        low = split_scene(path)[0].lower()
        if low.endswith(LIST_SUFFIXES):
            return _list_file(path)
        if low.endswith(".json") and split_scene(path)[1] is None:
            return _stac(path)
        return [path]
    if os.path.isdir(path):
        return _folder(path)
    low = path.lower()
    if low.endswith(LIST_SUFFIXES):
        return _list_file(path)
    if low.endswith(".json"):
        return _stac(path)
    return [os.path.abspath(path)]


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """The scenes named by a batch's inputs, each once, in the order given.

    Parameters
    ----------
    inputs : iterable of str
        Scene paths (rasters, manifests, sensor folders, STAC Items as
        ``item.json`` or ``collection.json#ID``); glob patterns; folders of
        scenes (their rasters, manifests, STAC Items and sensor sub-folders;
        a sensor folder itself is one scene); text files listing scenes
        (``.txt``, one per line); STAC ItemCollections and local Catalogs
        (every Item). A raster, list or STAC document may be a URL; a pattern
        over a bucket (``'s3://bucket/scenes/*.tif'``) is listed through the
        store's API (:func:`tiler.storage.glob`).

    Returns
    -------
    list of str
        Absolute scene strings (URLs as given).

    Raises
    ------
    SceneReadError
        An input does not exist, a pattern matches nothing, a list names a
        missing scene, a STAC file is not valid.
    UsageError
        No scene at all.
    """
    scenes: list[str] = []
    for spec in inputs:
        if is_url(spec):
            if any(c in spec for c in "*?["):  # a bucket prefix, listed through the store's API
                matched = [m for m in glob_objects(spec) if m.lower().endswith(SCENE_SUFFIXES)]
                if not matched:
                    raise SceneReadError(f"pattern {redact(spec)} matches no object; check the bucket and prefix")
                for m in matched:
                    scenes.extend(_one(m))
            else:
                scenes.extend(_one(spec))
            continue
        if any(c in spec for c in "*?[") and not os.path.exists(spec):
            matched = sorted(glob.glob(spec, recursive=True))
            if not matched:
                raise SceneReadError(f"pattern {spec!r} matches no file; check it (quote it so that the shell "
                                     "does not expand it first)")
            for m in matched:
                scenes.extend(_one(m))
            continue
        base, item = split_scene(spec)
        if not os.path.exists(base):
            raise SceneReadError(f"input {spec!r} does not exist; check the path")
        scenes.extend([f"{os.path.abspath(base)}#{item}"] if item is not None else _one(spec))
    unique = list(dict.fromkeys(scenes))
    if not unique:
        raise UsageError(f"no scene found in {', '.join(inputs)}; give rasters, folders of them, a list file "
                         "or a STAC document (sub-folders are not searched: for scenes below a folder use a quoted "
                         "pattern such as 'DIR/**/*.tif')")
    return unique


def _stem(scene: str) -> str:
    path, item = split_scene(scene)
    if item:
        return item
    if is_url(path):
        return os.path.splitext(name_of(path))[0]
    base = os.path.basename(path.rstrip(os.sep))
    return os.path.splitext(base)[0] if os.path.isfile(path) else base


def output_name(template: str, scene: str, model: str) -> str:
    """The output file name of a scene from a ``--name`` template.

    Parameters
    ----------
    template : str
        Python format string with ``{stem}`` (the scene's file stem, folder
        name or STAC Item id) and ``{model}`` (the model file's stem), e.g.
        ``"{stem}_{model}.tif"``.
    scene, model : str

    Returns
    -------
    str

    Raises
    ------
    UsageError
        For an unknown field or a template that is not a plain file name.
    """
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    bad = [f for f in fields if f not in NAME_FIELDS]
    if bad or os.sep in template:
        raise UsageError(f"--name {template!r}: use a file name with the fields {{stem}} and {{model}} only, e.g. "
                         "'{stem}_{model}.tif'")
    return template.format(stem=_stem(scene), model=os.path.splitext(os.path.basename(model))[0])
