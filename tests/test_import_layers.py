"""``common`` is layered one way: a module may import its own layer and the layers below it, never one above.

Rank  Layer            Modules
----  ---------------  ---------------------------------------------------------------------------------------------
0     foundation       ``common`` (the package root), ``errors``, ``fs`` (atomic writes), ``viz`` (image grids,
                       PNG), ``tracking`` (MLflow settings; the package root imports it, so it must sit here)
1     data             ``data`` (datalists, readers, phantoms, transforms, writers)
2     building blocks  ``networks``, ``losses``, ``metrics`` (functions of tensors / arrays; engines score with them)
3     engines          ``engines`` (trainers, recipes, generation, handlers, torchrun helpers)
4     privacy, audit   ``privacy`` (DP-SGD, accountant, memorisation), ``audit`` (quality + privacy of a set)
5     protocol         ``protocol`` (folds x arms -> report; SpineGAN's clinical classifier and generator arms),
                       ``bundle_files`` (which files a bundle copy carries; used by protocol.export and ci/)
6     bundle entry     ``bundle``, ``overrides``, ``run_lock`` (what a bundle config calls in ``initialize``)
(7)   bundle configs   ``bundles/*/configs`` may name anything in ``common``; nothing in ``common`` imports them.

The issue (#17) orders the layers "data -> networks, losses -> engines -> privacy, metrics -> protocol -> bundle
configs". ``metrics`` sits lower here, beside ``networks`` and ``losses``: the engines select models by validation
metrics (``fit_classifier``'s balanced accuracy, ``fit_segmenter``'s BraTS Dice, ``evaluate_classifier``) exactly as
they train with losses, and no metric needs an engine, so ranking metrics at 2 both matches the code and forbids more
(a metric may not import an engine) than ranking it at 4 would.

Every ``import`` / ``from ... import`` statement of every ``.py`` file under ``common/`` counts: module level,
inside functions and classes, under ``if TYPE_CHECKING``, relative ones (resolved against the importing module).
The test fails listing each upward import as ``file:line -> target``.

A second rule: underscore names are private. A private name (``_merge_folds``) belongs to its module, so no other
module imports it; a private module (``common.data._fs``) belongs to its package, so only modules of that package
import it. Make the helper public, or move it where both users can reach it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMON = REPO_ROOT / "common"

#: rank of each first-level name under ``common`` (a sub-package or a top-level module); ``""`` is the root package
RANKS: dict[str, int] = {
    "": 0,
    "errors": 0,
    "fs": 0,
    "viz": 0,
    "tracking": 0,
    "data": 1,
    "networks": 2,
    "losses": 2,
    "metrics": 2,
    "engines": 3,
    "privacy": 4,
    "audit": 4,
    "protocol": 5,
    "bundle_files": 5,
    "bundle": 6,
    "overrides": 6,
    "run_lock": 6,
}


def module_name(path: Path, root: Path = COMMON) -> str:
    """``common/engines/stylegan2.py`` -> ``common.engines.stylegan2``; a package's ``__init__.py`` -> the package."""
    parts = ("common", *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _exists(module: str, root: Path = COMMON) -> bool:
    rel = Path(*module.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def imports_of(path: Path, root: Path = COMMON) -> list[tuple[int, str, str | None]]:
    """Every import of ``common`` in ``path``: ``(line, module, name)``.

    ``module`` is the absolute module imported from; ``name`` the imported name of a ``from`` import, None for a
    plain ``import``. ``from common.engines import distributed`` (a sub-module) gives module
    ``common.engines.distributed`` and name None, so that the sub-module's own layer and privacy count.
    """
    me = module_name(path, root)
    package = me if _is_package(path) else me.rpartition(".")[0]
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: level 1 is the importing module's package, 2 its parent, ...
                base = package.split(".")
                if node.level - 1 >= len(base):
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                if alias.name != "*" and module.split(".")[0] == "common" and _exists(sub, root):
                    found.append((node.lineno, sub, None))
                else:
                    found.append((node.lineno, module, alias.name))
    return [(line, mod, name) for line, mod, name in found if mod == "common" or mod.startswith("common.")]


def layer_of(module: str) -> str:
    """The first-level name under ``common`` that places ``module`` (``""`` for ``common`` itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _private(part: str) -> bool:
    return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))


def check(root: Path = COMMON) -> tuple[list[str], list[str], list[str]]:
    """``(upward, private, unranked)``: the messages of every violation under ``root``."""
    upward: list[str] = []
    private: list[str] = []
    unranked: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        my_package = me if _is_package(path) else me.rpartition(".")[0]
        where = path.relative_to(root.parent).as_posix()
        mine = layer_of(me)
        if mine not in RANKS:
            unranked.add(f"{where}: '{mine}' has no rank in RANKS")
            continue
        for line, module, name in imports_of(path, root):
            target = module if name is None else f"{module}.{name}"
            theirs = layer_of(module)
            if theirs not in RANKS:
                unranked.add(f"{where}:{line} -> {target}: '{theirs}' has no rank in RANKS")
            elif RANKS[theirs] > RANKS[mine]:
                upward.append(
                    f"{where}:{line} -> {target}  ({mine or 'common'} rank {RANKS[mine]} imports {theirs} rank "
                    f"{RANKS[theirs]})"
                )
            if name is not None and _private(name) and module != me:
                private.append(f"{where}:{line} -> {target}  (private name of another module)")
            parts = module.split(".")
            for i, part in enumerate(parts):
                owner = ".".join(parts[:i])  # the package a private module belongs to
                if _private(part) and not (my_package == owner or my_package.startswith(owner + ".")):
                    private.append(f"{where}:{line} -> {target}  (private module of {owner})")
                    break
    return upward, private, sorted(unranked)


def test_every_layer_has_a_rank():
    _, _, unranked = check()
    assert not unranked, "give these a rank in RANKS (and the table above):\n" + "\n".join(unranked)


def test_no_upward_imports():
    upward, _, _ = check()
    assert not upward, f"{len(upward)} upward import(s) in common/:\n" + "\n".join(upward)


def test_no_private_imports_across_modules():
    _, private, _ = check()
    assert not private, f"{len(private)} import(s) of another module's private name:\n" + "\n".join(private)


def test_the_check_sees_function_local_relative_and_private_imports(tmp_path):
    """The checker itself, on a small fake ``common``: each kind of violation is found, with file and line."""
    files = {
        "__init__.py": "",
        "errors.py": "",
        "data/__init__.py": "from . import _fs\n",  # package-private module, used inside its package: fine
        "data/_fs.py": "def _helper():\n    pass\n",
        "data/io.py": "from ..errors import DataError\n",  # relative, downward: fine
        "engines/__init__.py": "",
        "engines/distributed.py": "",
        "losses/__init__.py": "",
        "losses/clinical.py": (
            "import torch\n"
            "def prepare():\n"
            "    from common.engines import distributed\n"  # function-local, upward
            "    return distributed\n"
        ),
        "metrics/__init__.py": "",
        "metrics/stats.py": "from ..engines.distributed import x\n",  # relative, upward
        "protocol/__init__.py": "",
        "protocol/turing.py": "from common.data._fs import atomic\n",  # private module of another package
        "protocol/report.py": "from common.protocol.classification import _merge\n",  # private name
        "protocol/classification.py": "import common.bundle\n",  # plain import, upward
        "bundle.py": "from common.protocol import report\n",  # downward
        "newthing.py": "",
    }
    root = tmp_path / "common"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    upward, private, unranked = check(root)
    assert upward == [
        "common/losses/clinical.py:3 -> common.engines.distributed  (losses rank 2 imports engines rank 3)",
        "common/metrics/stats.py:1 -> common.engines.distributed.x  (metrics rank 2 imports engines rank 3)",
        "common/protocol/classification.py:1 -> common.bundle  (protocol rank 5 imports bundle rank 6)",
    ]
    assert private == [
        "common/protocol/report.py:1 -> common.protocol.classification._merge  (private name of another module)",
        "common/protocol/turing.py:1 -> common.data._fs.atomic  (private module of common.data)",
    ]
    assert unranked == ["common/newthing.py: 'newthing' has no rank in RANKS"]


@pytest.mark.parametrize("layer", sorted(RANKS))
def test_every_ranked_layer_exists(layer):
    """A rank for a layer that is gone (renamed, moved) would hide a new module of that name: keep RANKS current."""
    assert layer == "" or _exists(f"common.{layer}"), f"RANKS names common.{layer}, which does not exist"
