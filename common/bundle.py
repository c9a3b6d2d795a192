"""Helpers that bundle configs call: at parse time (locating the bundle), in ``initialize`` (refusing bad command-line
overrides, locking ``output_dir``), and clean error messages for bundle runs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from common.errors import install_excepthook
from common.overrides import check_overrides
from common.run_lock import lock_output_dir, release_output_dir

__all__ = ["check_overrides", "find_bundle_root", "lock_output_dir", "release_output_dir"]

# bundle configs import this module: a bad dataset_dir then ends a bundle run with one clear line
install_excepthook()


def find_bundle_root(name: str) -> str:
    """Return the folder of bundle ``name`` (the one that holds ``configs/``) as an absolute path.

    ``monai.bundle run`` gives a config no way to know its own location, so we look, in order, at:
    the ``--config_file`` / ``--meta_file`` arguments on the command line (a config inside ``<root>/configs/``),
    ``./bundles/<name>`` (the repository root), ``./<name>`` and ``.`` (inside a downloaded bundle folder).
    ``--bundle_root DIR`` on the command line still overrides the result, as with any config key.
    """
    for arg in sys.argv[1:]:
        for token in re.split(r"[\[\],'\"\s]+", arg):
            path = Path(token)
            if path.suffix in (".json", ".yaml", ".yml") and path.parent.name == "configs" and path.exists():
                root = path.resolve().parent.parent
                if root.name == name or (root / "configs" / "metadata.json").exists():
                    return str(root)
    for candidate in (Path("bundles") / name, Path(name), Path(".")):
        if (candidate / "configs" / "metadata.json").exists():
            return str(candidate.resolve())
    raise FileNotFoundError(
        f"cannot find the folder of bundle '{name}': run from the repository root or the bundle folder, "
        "or pass --bundle_root DIR"
    )
