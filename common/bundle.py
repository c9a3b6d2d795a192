"""Helpers that bundle configs call: at parse time (locating the bundle), in ``initialize`` (starting the run with
one-line data errors, refusing bad command-line overrides, locking ``output_dir``).

Importing this module changes nothing in the importing program: the one-line error hook is installed by
``start_run``, the first step of every bundle config's ``initialize``.
"""

from __future__ import annotations

from pathlib import Path

from common.errors import install_excepthook
from common.overrides import check_overrides, running_workflow
from common.run_lock import lock_output_dir, release_output_dir

__all__ = ["check_overrides", "find_bundle_root", "lock_output_dir", "release_output_dir", "start_run"]


def start_run() -> None:
    """Start a bundle run: from here on an uncaught ``DataError`` ends the program with its one line on stderr.

    Every bundle config (``train.json``, ``inference.json``, ``multi_gpu_train.json``, the downstream
    ``classify.json`` / ``segment.json``) calls it first in ``initialize``, before anything that can refuse bad
    input (``check_overrides``, ``lock_output_dir``, reading ``dataset_dir``). It replaces ``sys.excepthook`` (see
    ``common.errors.install_excepthook``) for the rest of the process, once; only a run does this, never an import.
    """
    install_excepthook()


def _is_bundle(root: Path, name: str) -> bool:
    return (root / "configs" / "metadata.json").exists() or (root.name == name and (root / "configs").is_dir())


def find_bundle_root(name: str) -> str:
    """Return the folder of bundle ``name`` (the one that holds ``configs/``) as an absolute path.

    A config cannot name its own location, but the ``monai.bundle`` workflow that reads it knows its config folder
    (``ConfigWorkflow.config_root_path``: the folder of the first ``--config_file``, where MONAI also looks for
    ``metadata.json`` and ``logging.conf``). So, in order:

    1. the running workflow's config folder, when it is ``<root>/configs`` of a bundle (``configs/metadata.json``,
       or a folder named ``name``): any working directory, absolute or relative config paths, a downloaded bundle;
    2. ``./bundles/<name>`` (the repository root), ``./<name>`` and ``.`` (inside a downloaded bundle folder), for a
       config read outside a workflow (a bare ``ConfigParser``) or a run whose first config file lies elsewhere.

    ``--bundle_root DIR`` on the command line still overrides the result, as with any config key.
    """
    workflow = running_workflow()
    config_root = vars(workflow).get("config_root_path") if workflow is not None else None
    if config_root is not None and Path(config_root).name == "configs":
        root = Path(config_root).resolve().parent
        if _is_bundle(root, name):
            return str(root)
    for candidate in (Path("bundles") / name, Path(name), Path(".")):
        if (candidate / "configs" / "metadata.json").exists():
            return str(candidate.resolve())
    raise FileNotFoundError(
        f"cannot find the folder of bundle '{name}': run from the repository root or the bundle folder, "
        "or pass --bundle_root DIR"
    )
