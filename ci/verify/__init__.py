"""The checks of ci/verify_bundle.py, one module per concern; ``verify`` runs them all on one bundle folder.

A bundle must pass what the MONAI model zoo's CI checks and synthaug's house rules, before it is shipped or handed
to MONAI Label: its files (``files``), its metadata (``metadata``) and package pins (``packages``), its configs
(``configs``) and MONAI's workflow properties (``properties``), its network against ``network_data_format``
(``network``, with the dummy inputs of ``shapes``), its weights and their TorchScript export (``model``), and, with
``--smoke``, a tiny training and inference run (``smoke``). Each check prints one line through ``base.Report``;
ci/verify_bundle.py is the command line and its docstring lists every check by the name it prints.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TextIO

from .base import Bundle, Report
from .configs import check_configs
from .files import check_file_sizes, check_large_files, check_logging_conf, check_no_scripts, check_required_files
from .metadata import (
    check_metadata_schema,
    check_metadata_schema_url,
    check_metadata_version,
    check_version_bump,
    load_metadata,
)
from .model import check_ckpt_export, check_model_file
from .network import check_net_in_out, check_network
from .packages import check_metadata_packages
from .properties import check_properties
from .smoke import DEFAULT_TIMEOUT_S, check_smoke


def verify(
    bundle_dir: Path,
    smoke: bool = False,
    keep: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    stream: TextIO | None = None,
    base: str | None = None,
) -> Report:
    """Run every check on ``bundle_dir``; return the report (its lines have been printed already)."""
    b = Bundle(bundle_dir.resolve())
    r = Report(stream)
    r.check("required_files", lambda: check_required_files(b, r))
    r.check("model_file", lambda: check_model_file(b, r))
    r.check("no_scripts_dir", lambda: check_no_scripts(b, r))
    r.check("logging_conf", lambda: check_logging_conf(b, r))
    listed: set[Path] = set()

    def _large() -> None:
        listed.update(check_large_files(b, r))

    r.check("large_files", _large)
    r.check("file_sizes", lambda: check_file_sizes(b, r, listed))

    meta = load_metadata(b, r)
    if meta is not None:
        r.check("metadata_schema", lambda: check_metadata_schema(b, meta, r))
        r.check("metadata_schema_url", lambda: check_metadata_schema_url(meta, r))
        r.check("metadata_version", lambda: check_metadata_version(meta, r))
        r.check("metadata_packages", lambda: check_metadata_packages(meta, r))
        if base:
            r.check("version_bump", lambda: check_version_bump(b, meta, base, r))

    r.check("config_parse", lambda: check_configs(b, r))
    r.check("properties", lambda: check_properties(b, r))
    r.check("network_shape", lambda: check_network(b, r, meta))
    r.check("ckpt_export", lambda: check_ckpt_export(b, r))
    r.check("verify_net_in_out", lambda: check_net_in_out(b, r, meta))

    if smoke:
        workdir = keep if keep is not None else Path(tempfile.mkdtemp(prefix=f"smoke_{b.root.name}_"))
        try:
            r.check("smoke", lambda: check_smoke(b, r, meta, workdir, timeout))
        finally:
            if keep is None:
                shutil.rmtree(workdir, ignore_errors=True)
    return r
