"""Decathlon-style JSON datalists: the one file format between "files on disk" and the MONAI transforms.

Layout::

    {"name": "...", "class_names": ["cyst", ...],
     "training": [{"image": "images/a.nii.gz", "label": 0, "patient": "p001", ...}, ...],
     ...extra meta (other sections such as "validation"/"test", provenance, counts)}

Paths are stored relative to the datalist's folder when the file lies under it (so a data set folder can be moved
or mounted elsewhere) and resolved to absolute paths on reading, like MONAI's ``load_decathlon_datalist``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.data.io import has_image_suffix
from common.errors import DataError
from common.fs import atomic_write_text

__all__ = ["DEFAULT_PATH_KEYS", "SECTIONS", "read_datalist", "write_datalist"]

#: Item keys whose string values are file paths (a classification ``label`` is an int and stays one).
DEFAULT_PATH_KEYS = ("image", "label", "seg", "mask")
#: Top-level lists of items whose paths are made relative on writing and absolute on reading.
SECTIONS = ("training", "validation", "test")


def _looks_like_path(value: str) -> bool:
    # A string under "label" may be a class name ("cyst") rather than a label map file: only a value with a folder
    # separator or an image suffix is taken as a path there.
    return "/" in value or os.sep in value or has_image_suffix(value)


def _relative(value: Any, root: Path) -> Any:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not os.path.isabs(value) or not os.path.exists(value):
        return value
    try:
        return Path(os.path.abspath(value)).relative_to(root).as_posix()
    except ValueError:  # not under the datalist's folder: keep it absolute
        return value


def _relative_value(value: Any, root: Path) -> Any:
    # a multi-sequence image is a list of files (one per MRI sequence): each is made relative
    if isinstance(value, (list, tuple)):
        return [_relative(v, root) for v in value]
    return _relative(value, root)


def _jsonable(value: Any) -> Any:
    # numpy scalars (labels from np.argmax, counts) are not JSON serialisable; .item() turns them into Python ones.
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _relative_items(items: Iterable[Any], root: Path, path_keys: Sequence[str]) -> list[Any]:
    out = []
    for item in items:
        if isinstance(item, Mapping):
            out.append({k: (_relative_value(v, root) if k in path_keys else v) for k, v in item.items()})
        else:  # Decathlon "test" sections are plain lists of paths
            out.append(_relative(item, root))
    return out


def write_datalist(
    path: str | os.PathLike,
    items: Iterable[Mapping[str, Any]],
    *,
    path_keys: Sequence[str] = DEFAULT_PATH_KEYS,
    **meta: Any,
) -> str:
    """Write ``items`` as the ``training`` section of a Decathlon-style datalist, plus ``meta`` at the top level.

    Path values (under ``path_keys``, in ``training`` and in any ``validation``/``test`` section passed in ``meta``)
    that name existing files under the datalist's folder are stored relative to it, posix style; other paths are kept
    as given. The file is written atomically. Returns the datalist path.
    """
    path = Path(path)
    root = Path(os.path.abspath(path.parent))
    content: dict[str, Any] = {}
    for key, value in meta.items():
        if key in SECTIONS and isinstance(value, (list, tuple)):
            value = _relative_items(value, root, path_keys)
        content[key] = value
    content["training"] = _relative_items(items, root, path_keys)
    if "name" in content:  # "name" first, for a human reading the file
        content = {"name": content.pop("name"), **content}
    atomic_write_text(path, json.dumps(content, indent=1, default=_jsonable) + "\n")
    return str(path)


def _resolve(value: str, root: Path, where: str, datalist: Path) -> str:
    resolved = value if os.path.isabs(value) else os.path.normpath(root / value)
    if not os.path.exists(resolved):
        raise DataError(f"datalist '{datalist}': {where} names '{value}', which does not exist ({resolved})")
    return resolved


def read_datalist(path: str | os.PathLike, path_keys: Sequence[str] = DEFAULT_PATH_KEYS) -> dict[str, Any]:
    """Read a Decathlon-style datalist; relative paths come back absolute (resolved against the datalist's folder).

    Integer labels stay integers; a string under a non-``image`` path key that does not look like a path (no folder
    separator, no image suffix) is left as it is, so class-name labels survive.

    Raises:
        DataError: the file is missing or not valid JSON, it has no ``training`` list, an item has no ``image``,
            or an item names a file that does not exist; the message names the datalist and the item/key.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"datalist '{path}' not found")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"datalist '{path}' is not valid JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise DataError(f"datalist '{path}' must be a JSON object with a 'training' list, got {type(content).__name__}")
    if not isinstance(content.get("training"), list):
        raise DataError(f"datalist '{path}' has no 'training' list (key 'training' missing or not a list)")
    root = Path(os.path.abspath(path.parent))
    for section in SECTIONS:
        if section not in content:
            continue
        if not isinstance(content[section], list):
            raise DataError(f"datalist '{path}': '{section}' must be a list, got {type(content[section]).__name__}")
        resolved_items = []
        for index, item in enumerate(content[section]):
            where = f"{section}[{index}]"
            if isinstance(item, str):
                resolved_items.append(_resolve(item, root, where, path))
                continue
            if not isinstance(item, dict):
                raise DataError(f"datalist '{path}': {where} must be an object, got {type(item).__name__}")
            if section == "training" and "image" not in item:
                raise DataError(f"datalist '{path}': {where} has no 'image' key (keys: {sorted(item)})")
            item = dict(item)
            for key in path_keys:
                value = item.get(key)
                if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    item[key] = [_resolve(v, root, f"{where}['{key}'][{i}]", path) for i, v in enumerate(value)]
                    continue
                if not isinstance(value, str) or (key != "image" and not _looks_like_path(value)):
                    continue
                item[key] = _resolve(value, root, f"{where}['{key}']", path)
            resolved_items.append(item)
        content[section] = resolved_items
    return content
