#!/usr/bin/env python
"""Verify one synthaug bundle the way the MONAI model zoo's CI does, plus synthaug's house rules.

Usage (from the repository root)::

    python ci/verify_bundle.py bundles/<name>                  # static checks + network shapes (seconds)
    python ci/verify_bundle.py bundles/<name> --smoke          # + a tiny train and inference run (minutes)
    python ci/verify_bundle.py bundles/<name> --smoke --keep /tmp/smoke_<name>   # keep the smoke outputs

Prints one line per check, ``PASS name``, ``FAIL name: reason``, ``WARN name: reason`` or ``SKIP name: reason``,
then a summary line. Exit status: 0 when no check failed (WARN and SKIP do not fail), 1 otherwise, 2 on bad usage.

Checks, by the name they print:

- ``required_files``: configs/{metadata,train,inference,evaluate,quick,multi_gpu_train}.json, configs/logging.conf,
  docs/README.md, docs/data_license.txt, LICENSE and the models/ folder exist.
  A downstream bundle exported by an evaluation (metadata has ``synthaug_export``; see
  ``common.protocol.export``) is inference-only: it needs configs/{metadata,inference}.json, configs/logging.conf,
  docs/README.md, docs/data_license.txt, LICENSE and models/model.pt; the checks of training configs then SKIP.
- ``no_scripts_dir``: no scripts/ folder (house rule: code lives in ``common``; ``$import scripts`` also breaks
  outside the bundle root).
- ``logging_conf``: configs/logging.conf is an INI file with [loggers], [handlers] and [formatters].
- ``large_files``: every entry of large_files.yml (models/ or the bundle root; .yml/.yaml/.json) has ``path``,
  ``url``, ``hash_val`` (64 hex digits) and ``hash_type: sha256``; a listed file that is present has that hash.
- ``file_sizes``: no file of the bundle is larger than 25 MB unless large_files.yml lists it (files git ignores,
  e.g. the phantom data a bundle writes under data/, are not part of the bundle and are not counted).
- ``model_file``: models/model.pt exists (the trained weights every zoo bundle ships; MONAI's ``ckpt_export`` and
  ``CheckpointLoader`` read it). A bundle without it FAILs: it is a recipe, not a model.
- ``metadata_schema``: configs/metadata.json is valid against the official MONAI schema file its ``schema`` URL
  names, read from ``<repository>/../shared/schema/`` (byte copies of the MONAI-extra-test-data 0.8.1 release; their
  sha256 is pinned in ``OFFICIAL_SCHEMAS``), by MONAI's own ``monai.bundle.verify_metadata`` given that local file
  as ``filepath`` (it downloads only when the file is missing, so nothing is downloaded). SKIP with the reason when
  ``../shared/schema`` is absent. On failure every schema error is listed with its path (``jsonschema``).
- ``metadata_schema_url``: the ``schema`` field names an official schema, and the one the zoo uses for such a
  network: ``meta_schema_generator_20220718.json`` when ``network_data_format.inputs`` has a ``latent`` (or any
  ``type: noise``) input, as the zoo's GAN bundle ``mednist_gan``; otherwise the general
  ``meta_schema_20240725.json`` (the exported downstream classifiers/segmenters, whose input is ``image``; and
  ``brain_pix2pix``, whose only input is a label map: pix2pix has no latent, and the generator schema requires one).
- ``metadata_version``: ``version`` is a ``changelog`` key and the newest one.
- ``version_bump`` (with ``--base REV``): when any file of the bundle differs from git revision REV (a release
  tag, ``origin/main``), ``version`` must be newer than the one at REV (and, by ``metadata_version``, the newest
  changelog key).
- ``metadata_packages``: ``required_packages_version`` (and ``optional_packages_version``, when present) pin exact
  versions of third-party packages that a package index serves: never ``synthaug-bundles`` (this repository, on no
  index; a packaged bundle carries its ``common`` copy instead, see ci/package_bundle.py); every package of
  setup.cfg's ``install_requires`` (extras for optional packages) is pinned, within its range there; and the
  ``monai``/``torch``/``numpy`` pins equal ``monai_version``/``pytorch_version``/``numpy_version``. MONAI reads
  ``optional_packages_version`` (which the generator schema requires) as the older name of
  ``required_packages_version`` and puts it in that one's place, so when both are present the optional pins must
  include every required pin (plus, e.g., opacus for DP-SGD).
- ``config_parse:<file>``: every configs/*.json parses with ``monai.bundle.ConfigParser`` on its own, and so do
  ``train+evaluate+quick`` (the protocol command) and ``train+quick[+smoke]`` (the smoke training).
- ``config_keys:<combo>``: train.json, inference.json and train+evaluate+quick define bundle_root, device,
  dataset_dir, output_dir, network_def and network (keys the zoo and MONAI Label read).
- ``config_refs:<combo>``: every ``@id`` reference in those combinations names an existing id.
- ``run_ids:train.json``: train.json defines both ``training`` (the design card's run id) and ``run`` (MONAI's
  default, which MONAI Label calls).
- ``run_ids:inference.json``: inference.json defines ``run`` and no item outside ``initialize`` refers to
  ``@initialize`` (apps such as MONAI Label read ``network_def``, ``inferer`` ... by id and need not run
  ``initialize``, so nothing else may depend on state that only ``initialize`` creates).
- ``properties:infer`` / ``properties:train``: ``monai.bundle.ConfigWorkflow(...).check_properties()`` for
  ``workflow_type="infer"`` on inference.json and ``"train"`` on train.json. A missing required property FAILs
  for inference (MONAI Label loads inference.json through exactly these properties: dataset, evaluator,
  inferer, network_def, ...). For training it is only a WARN: MONAI's train property set describes a supervised
  ``SupervisedTrainer`` (``train#trainer``, ``train#dataset``, ``train#inferer``, ``train#trainer#max_epochs``)
  and a GAN trainer has no single inferer and two networks, so a faithful GAN bundle may legitimately miss some.
  Properties are checked for presence only (see ``_PresenceWorkflow``): nothing is instantiated.
- ``network_shape``: ``network`` (else ``network_def``) of inference.json (else train.json) is instantiated;
  dummy inputs (batch 2) are built from ``network_data_format.inputs`` and passed positionally in the order the
  inputs are listed, so a conditional generator ``forward(z, labels)`` lists ``latent`` then ``condition``;
  the output's channels and spatial shape are compared with the first entry of ``outputs`` (the first element
  if the network returns a tuple/list; the entry of that name, else the first value, if it returns a dict).
  Dummy inputs: integer ``dtype`` -> class ids in ``value_range`` [lo, hi] (else 0..len(channel_def)-1, else
  0..num_channels-1), shape (2,) for a non-spatial single-channel input (e.g. an ``nn.Embedding`` condition);
  ``type: noise`` -> N(0, 1) of shape (2, num_channels) or (2, num_channels, *spatial_shape); a float
  ``labels``/``classes``/``segmentation`` input -> one-hot maps; anything else -> uniform in ``value_range``.
  ``"*"`` sizes become 32; one-letter variables (``"2**n"``) get the smallest common value that makes every
  size >= 16, shared between inputs and outputs.
- ``ckpt_export``: what ``python -m monai.bundle ckpt_export network_def --config_file configs/inference.json``
  does: with models/model.pt, MONAI's ``ckpt_export`` itself (weights loaded into ``network_def``,
  ``torch.jit.script``, saved to a temporary file that ``torch.jit.load`` reads back), once per network of a synthaug
  model file (``--key_in_ckpt <name>``: the per-class generators, ``conditional`` or ``generator``); without it,
  ``network_def`` is built and scripted without weights (the weights' absence FAILs in ``model_file``). SKIP for a
  bundle in ``EXCLUDE_VERIFY_TORCHSCRIPT`` (the zoo's ``exclude_verify_torchscript_list``; empty: every network
  scripts).
- ``verify_net_in_out``: MONAI's ``monai.bundle.verify_net_in_out`` on ``network_def`` of inference.json, as the
  zoo's CI runs it: a random ``inputs.image`` of batch 1, output channels and dtype against ``outputs.pred``. It only
  knows an ``image`` input, so a bundle whose network takes latents or label maps is declared in
  ``EXCLUDE_VERIFY_SHAPE`` with its reason (the zoo lists ``mednist_gan`` in ``exclude_verify_shape_list`` of its
  ci/bundle_custom_data.py) and SKIPs; ``network_shape`` checks such inputs instead. A bundle without an ``image``
  input that is not declared FAILs.

Without models/model.pt, a network that inference.json builds from it (the generators' sizes travel with their
weights) cannot be built: ``network_shape`` and ``verify_net_in_out`` then SKIP (the sizes in
``network_data_format`` describe the shipped weights, and train.json's may differ, e.g. by device), and
``ckpt_export`` scripts train.json's network (the same class) and says so.

- ``--smoke``: ``smoke_train`` runs ``python -m monai.bundle run training --config_file
  "['<b>/configs/train.json','<b>/configs/quick.json'(,'<b>/configs/smoke.json')]" --output_dir OUT
  --max_epochs 1`` (plus ``--meta_file``, ``--logging_file``, ``--bundle_root``; ``smoke_max_epochs`` WARNs when
  the merged training config has no top-level ``max_epochs`` for that override to set), ``smoke_checkpoint`` wants a
  ``*.pt``/``*.pth`` under OUT, ``smoke_inference`` runs ``python -m monai.bundle run --config_file
  "['<b>/configs/inference.json','<b>/configs/quick.json'(,'<b>/configs/smoke.json')(,'<b>/configs/smoke_inference.json')]"
  --output_dir OUT`` (the training's size overrides, so that the networks match the trained weights; and
  ``--ckpt_path <newest checkpoint>`` when inference.json has a top-level ``ckpt_path``), and
  ``smoke_outputs`` wants new data files plus a datalist JSON (a list of dicts, or a dict of such lists) whose
  entries name files that exist. Each run is a subprocess from the repository root with ``--timeout`` seconds.

Per-bundle smoke conventions: ``configs/smoke.json`` (optional) is added after quick.json for the smoke training
(shrink the phantom data set to a few images, batch size 2 ...) and after quick.json for the smoke inference;
``configs/smoke_inference.json`` (optional) is added last for the inference (e.g. generate 4 samples).
Both are ordinary override files, so they must parse.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import contextlib
import hashlib
import json
import logging
import operator
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the official MONAI metadata schemas, byte copies outside the project (never copied into it)
SCHEMA_DIR = REPO_ROOT.parent / "shared" / "schema"
SCHEMA_URL_BASE = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
GENERAL_SCHEMA = "meta_schema_20240725.json"
GENERATOR_SCHEMA = "meta_schema_generator_20220718.json"
#: file name -> sha256 of the published file: a local copy that differs is not the official schema
OFFICIAL_SCHEMAS: dict[str, str] = {
    GENERAL_SCHEMA: "cd64aa8a5904426f6fc6855dabe46af8c742d5bad644b4e9cfb78ebad09ad678",
    GENERATOR_SCHEMA: "5265725aa5f57bfaccabf64d5f01c9aaa0dddcbb8d0510415c48f1ff6e7c8f99",
}

# Bundle configs name ``common....`` in ``_target_``; running this file puts ci/ (not the root) on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

REQUIRED_FILES: tuple[str, ...] = (
    "configs/metadata.json",
    "configs/train.json",
    "configs/inference.json",
    "configs/evaluate.json",
    "configs/quick.json",
    "configs/multi_gpu_train.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
)
REQUIRED_DIRS: tuple[str, ...] = ("models",)
#: a downstream (inference-only) bundle, written by an evaluation (``common.protocol.export``): its metadata has a
#: ``synthaug_export`` record; it has no training configs, and its weights must be there (MONAI Label loads them)
EXPORT_MARKER = "synthaug_export"
REQUIRED_FILES_INFERENCE_ONLY: tuple[str, ...] = (
    "configs/metadata.json",
    "configs/inference.json",
    "configs/logging.conf",
    "docs/README.md",
    "docs/data_license.txt",
    "LICENSE",
    "models/model.pt",
)
CONFIG_KEYS: tuple[str, ...] = ("bundle_root", "device", "dataset_dir", "output_dir", "network_def", "network")
#: this repository's own distribution: on no package index, so a bundle must not require it (it carries ``common``)
OWN_PACKAGE = "synthaug-bundles"
#: the pins of these packages must equal the metadata's ``<field>``
VERSION_FIELDS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}
WEIGHTS = "models/model.pt"
#: key of the model information in a synthaug model file (``common.engines.model_file.MODEL_INFO_KEY``): every other
#: top-level key of such a file holds one network's state dict
MODEL_INFO_KEY = "synthaug"

# Bundles excluded from MONAI's ``verify_net_in_out`` (the model zoo's ``exclude_verify_shape_list`` in its
# ci/bundle_custom_data.py, which lists its GAN bundle ``mednist_gan``): that function feeds a random
# ``inputs.image`` and knows no other input. A generator's input is a latent (``type: noise``) and, when conditional,
# a class index or a label map, which ``network_shape`` builds from network_data_format instead. Name -> reason.
EXCLUDE_VERIFY_SHAPE: dict[str, str] = {
    "brain_pix2pix": "pix2pix generator: its input is a one-hot label map 'condition', not an 'image'",
    "liver_lesion_gan": "DCGAN/ACGAN generator: its inputs are a latent z (type noise) and, for the ACGAN, a class",
    "lung_cisl_gan": "class-conditional generator: its inputs are a latent z (type noise) and a class index",
    "skin_melanogan": "DCGAN/LAPGAN/DDGAN-like generator: its input is a latent z (type noise)",
    "spine_stylegan2": "conditional StyleGAN2 generator: its inputs are a latent z (type noise) and a class index",
}
# Bundles whose network_def does not script (the zoo's ``exclude_verify_torchscript_list``). Name -> reason.
EXCLUDE_VERIFY_TORCHSCRIPT: dict[str, str] = {}
MAX_FILE_BYTES = 25 * 1000 * 1000  # the model zoo's limit for files committed with a bundle
LARGE_FILES_NAMES: tuple[str, ...] = ("large_files.yml", "large_files.yaml", "large_files.json")
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".pth")
DEFAULT_TIMEOUT_S = 900.0
ANY_SIZE = 32  # a "*" spatial size in network_data_format
MIN_VARIABLE_SIZE = 16  # one-letter size variables ("2**n") are chosen so that every size is at least this
BATCH = 2

STATUSES = ("PASS", "FAIL", "WARN", "SKIP")


# ----------------------------------------------------------------------------------------------------------------
# reporting


@dataclass
class Result:
    """One printed line: status, check name, reason, and optional indented detail lines (e.g. a log tail)."""

    status: str
    name: str
    reason: str = ""
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.status} {self.name}" + (f": {self.reason}" if self.reason else "")


class Report:
    """Collects results and prints each as it comes, so a long smoke run shows progress."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.results: list[Result] = []

    def add(self, status: str, name: str, reason: str = "", details: Sequence[str] = ()) -> Result:
        assert status in STATUSES, status
        result = Result(status, name, " ".join(reason.split()), list(details))
        self.results.append(result)
        stream = self.stream if self.stream is not None else sys.stdout
        print(result.line(), file=stream, flush=True)
        for d in result.details:
            print(f"    | {d}", file=stream, flush=True)
        return result

    def ok(self, name: str, reason: str = "") -> None:
        self.add("PASS", name, reason)

    def fail(self, name: str, reason: str, details: Sequence[str] = ()) -> None:
        self.add("FAIL", name, reason, details)

    def warn(self, name: str, reason: str) -> None:
        self.add("WARN", name, reason)

    def skip(self, name: str, reason: str) -> None:
        self.add("SKIP", name, reason)

    def check(self, name: str, fn: Callable[[], Any]) -> None:
        """Run one check; an unexpected exception is that check's FAIL, never a crash of the whole run."""
        try:
            fn()
        except Exception as e:  # any error in a bundle is a finding, not a verifier bug
            self.fail(name, f"{type(e).__name__}: {e}")

    @property
    def failed(self) -> int:
        return sum(r.status == "FAIL" for r in self.results)

    def summary(self) -> str:
        counts = {s: sum(r.status == s for r in self.results) for s in STATUSES}
        return ", ".join(f"{counts[s]} {s.lower()}" for s in STATUSES)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence MONAI's logging (its handlers write to stdout) and warnings, so stdout stays one line per check."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


# ----------------------------------------------------------------------------------------------------------------
# the bundle


@dataclass
class Bundle:
    """Paths of one bundle folder."""

    root: Path

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def config(self, name: str) -> Path:
        return self.configs / name

    @property
    def meta_file(self) -> Path:
        return self.config("metadata.json")

    @property
    def logging_file(self) -> Path:
        return self.config("logging.conf")

    @property
    def inference_only(self) -> bool:
        """A downstream bundle exported by an evaluation (metadata has ``synthaug_export``): no train/evaluate."""
        try:
            meta = json.loads(self.meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(meta, dict) and EXPORT_MARKER in meta

    def optional(self, name: str) -> list[Path]:
        """``[configs/name]`` when the bundle has that override file, else ``[]``."""
        path = self.config(name)
        return [path] if path.is_file() else []


# ----------------------------------------------------------------------------------------------------------------
# files


def check_required_files(b: Bundle, r: Report) -> None:
    required = REQUIRED_FILES_INFERENCE_ONLY if b.inference_only else REQUIRED_FILES
    missing = [f for f in required if not (b.root / f).is_file()]
    missing += [f"{d}/" for d in REQUIRED_DIRS if not (b.root / d).is_dir()]
    if missing:
        r.fail("required_files", "missing " + ", ".join(missing))
    else:
        r.ok("required_files", "inference-only (exported downstream) bundle" if b.inference_only else "")


def check_no_scripts(b: Bundle, r: Report) -> None:
    if (b.root / "scripts").exists():
        r.fail("no_scripts_dir", "scripts/ exists: bundle code belongs in the common package (configs name common....)")
    else:
        r.ok("no_scripts_dir")


def check_logging_conf(b: Bundle, r: Report) -> None:
    if not b.logging_file.is_file():
        r.skip("logging_conf", "configs/logging.conf is missing")
        return
    ini = configparser.RawConfigParser()
    ini.read(b.logging_file, encoding="utf-8")
    missing = [s for s in ("loggers", "handlers", "formatters") if not ini.has_section(s)]
    if missing:
        r.fail("logging_conf", "configs/logging.conf lacks section(s) " + ", ".join(f"[{s}]" for s in missing))
    else:
        r.ok("logging_conf")


def _find_large_files_list(b: Bundle) -> Path | None:
    for folder in (b.root / "models", b.root):
        for name in LARGE_FILES_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_large_files(b: Bundle, r: Report) -> set[Path]:
    """Validate large_files.yml; return the resolved paths it lists (exempt from the size limit)."""
    listed: set[Path] = set()
    path = _find_large_files_list(b)
    if path is None:
        r.ok("large_files", "no large_files.yml")
        return listed
    try:
        if path.suffix == ".json":
            content = json.loads(path.read_text(encoding="utf-8"))
        else:
            import yaml  # PyYAML comes with MONAI's bundle tools; only needed when the bundle has this file

            content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as e:
        r.fail("large_files", f"{path.relative_to(b.root)} does not parse: {e}")
        return listed
    entries = content.get("large_files") if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        r.fail("large_files", f"{path.relative_to(b.root)} needs a non-empty list under 'large_files'")
        return listed
    problems: list[str] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.append(f"entry {i} is not a mapping")
            continue
        label = entry.get("path", f"entry {i}")
        missing = [k for k in ("path", "url", "hash_val", "hash_type") if not entry.get(k)]
        if missing:
            problems.append(f"{label}: missing {', '.join(missing)}")
        if entry.get("hash_type") and str(entry["hash_type"]).lower() != "sha256":
            problems.append(f"{label}: hash_type is {entry['hash_type']!r}, not sha256")
        hash_val = str(entry.get("hash_val", ""))
        if hash_val and not re.fullmatch(r"[0-9a-fA-F]{64}", hash_val):
            problems.append(f"{label}: hash_val is not a sha256 hex digest")
        if entry.get("path"):
            target = (b.root / str(entry["path"])).resolve()
            listed.add(target)
            # a downloaded copy must be the file the url serves, or users get different weights than CI checked
            if target.is_file() and re.fullmatch(r"[0-9a-fA-F]{64}", hash_val) and _sha256(target) != hash_val.lower():
                problems.append(f"{label}: the local file's sha256 differs from hash_val")
    if problems:
        r.fail("large_files", "; ".join(problems))
    else:
        r.ok("large_files", f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} in {path.relative_to(b.root)}")
    return listed


def _bundle_files(root: Path) -> list[Path]:
    """Files that belong to the bundle: git's view (tracked + untracked, not ignored) when in a repository."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "."],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        return [root / p for p in out.decode().split("\0") if p and (root / p).is_file()]
    except (OSError, subprocess.SubprocessError):
        return [p for p in root.rglob("*") if p.is_file() and ".git" not in p.relative_to(root).parts]


def check_file_sizes(b: Bundle, r: Report, listed: set[Path]) -> None:
    too_big = [
        f"{p.relative_to(b.root)} ({p.stat().st_size / 1e6:.1f} MB)"
        for p in _bundle_files(b.root)
        if p.stat().st_size > MAX_FILE_BYTES and p.resolve() not in listed
    ]
    if too_big:
        r.fail("file_sizes", "larger than 25 MB and not in large_files.yml: " + ", ".join(too_big))
    else:
        r.ok("file_sizes")


# ----------------------------------------------------------------------------------------------------------------
# metadata


def _version_key(version: str) -> tuple:
    """Sort key for bundle versions: PEP 440 when it parses, else the tuple of its integers."""
    try:
        from packaging.version import InvalidVersion, Version

        try:
            return (1, Version(version))
        except InvalidVersion:
            pass
    except ImportError:
        pass
    return (0, tuple(int(x) for x in re.findall(r"\d+", version)))


def load_metadata(b: Bundle, r: Report) -> dict | None:
    if not b.meta_file.is_file():
        r.skip("metadata_schema", "configs/metadata.json is missing")
        return None
    try:
        meta = json.loads(b.meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        r.fail("metadata_schema", f"configs/metadata.json is not valid JSON: {e}")
        return None
    if not isinstance(meta, dict):
        r.fail("metadata_schema", "configs/metadata.json is not a JSON object")
        return None
    return meta


def _schema_name(meta: dict) -> str | None:
    """The file name the ``schema`` URL ends in (what MONAI's ``verify_metadata`` would download)."""
    url = meta.get("schema")
    return url.rstrip("/").rsplit("/", 1)[-1] if isinstance(url, str) and url.strip() else None


def expected_schema(meta: dict) -> str:
    """The official schema the zoo uses for this network: the generator one for a latent input, else the general."""
    fmt = meta.get("network_data_format")
    inputs = fmt.get("inputs") if isinstance(fmt, dict) else None
    if isinstance(inputs, dict) and (
        "latent" in inputs or any(isinstance(v, dict) and v.get("type") == "noise" for v in inputs.values())
    ):
        return GENERATOR_SCHEMA
    return GENERAL_SCHEMA


def _schema_errors(meta: dict, schema: dict) -> list[str]:
    """Every error of ``meta`` against ``schema`` as ``path: message`` (MONAI's message names one, without a path)."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(meta), key=lambda e: list(e.absolute_path))
    messages = []
    for error in errors:
        # an anyOf error ("a tensor or a scalar") says little; best_match descends to the sub-error that does
        best = jsonschema.exceptions.best_match([error])
        where = "/".join(str(p) for p in best.absolute_path) or "(top level)"
        messages.append(f"{where}: {best.message}")
    return messages


def check_metadata_schema(b: Bundle, meta: dict, r: Report) -> None:
    name = "metadata_schema"
    if not SCHEMA_DIR.is_dir():
        r.skip(name, f"{SCHEMA_DIR} is absent: the official MONAI schema files are read from there, never downloaded")
        return
    schema_name = _schema_name(meta)
    if schema_name is None:
        r.fail(name, "no 'schema' field: MONAI's verify_metadata needs the URL of the schema")
        return
    schema_file = SCHEMA_DIR / schema_name
    if schema_name not in OFFICIAL_SCHEMAS or not schema_file.is_file():
        r.fail(
            name,
            f"'schema' names {schema_name}, not an official schema in {SCHEMA_DIR} ({', '.join(OFFICIAL_SCHEMAS)})",
        )
        return
    digest = OFFICIAL_SCHEMAS[schema_name]
    if _sha256(schema_file) != digest:
        r.fail(name, f"{schema_file} is not the official file (its sha256 differs from {digest})")
        return
    try:
        import jsonschema  # noqa: F401  (MONAI's verify_metadata needs it; a clear message when it is missing)
    except ImportError:
        r.fail(name, "jsonschema is not installed (pip install jsonschema): MONAI's verify_metadata needs it")
        return
    from monai.bundle import verify_metadata

    try:
        with _quiet():
            # the local file is the download target: it exists with the official hash, so nothing is downloaded
            verify_metadata(meta_file=str(b.meta_file), filepath=str(schema_file), hash_val=digest, hash_type="sha256")
    except ValueError as e:
        schema = json.loads(schema_file.read_text(encoding="utf-8"))
        messages = _schema_errors(meta, schema) or [str(e)]
        more = f" (+{len(messages) - 5} more)" if len(messages) > 5 else ""
        r.fail(name, f"invalid against {schema_name}: " + "; ".join(messages[:5]) + more)
        return
    r.ok(name, f"valid against {schema_name} (monai.bundle.verify_metadata, {os.path.relpath(schema_file, REPO_ROOT)})")


def check_metadata_schema_url(meta: dict, r: Report) -> None:
    name = "metadata_schema_url"
    schema_name = _schema_name(meta)
    want = expected_schema(meta)
    if schema_name is None:
        r.fail(name, f"no 'schema' field (want {SCHEMA_URL_BASE}{want})")
    elif schema_name not in OFFICIAL_SCHEMAS:
        r.fail(name, f"'schema' is {meta['schema']!r}, not an official MONAI schema ({', '.join(OFFICIAL_SCHEMAS)})")
    elif schema_name != want:
        why = "it has a latent input (a generator)" if want == GENERATOR_SCHEMA else "it has no latent input"
        r.fail(name, f"'schema' names {schema_name}, but {why}: the zoo uses {want}")
    else:
        r.ok(name, schema_name)


def check_metadata_version(meta: dict, r: Report) -> None:
    version, changelog = meta.get("version"), meta.get("changelog")
    if not isinstance(version, str) or not isinstance(changelog, dict) or not changelog:
        r.fail("metadata_version", "needs a string 'version' and a non-empty 'changelog' object")
        return
    newest = max(changelog, key=_version_key)
    if version not in changelog:
        r.fail("metadata_version", f"version {version} is not a changelog key (newest is {newest})")
    elif version != newest:
        r.fail("metadata_version", f"version {version} is not the newest changelog key ({newest})")
    else:
        r.ok("metadata_version", version)


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def check_version_bump(b: Bundle, meta: dict, base: str, r: Report) -> None:
    """A bundle whose files differ from ``base`` (a git revision) must carry a newer ``version`` than at ``base``."""
    rel = b.root.relative_to(REPO_ROOT).as_posix()
    old_text = _git("show", f"{base}:{rel}/configs/metadata.json")
    if old_text is None:
        r.ok("version_bump", f"new bundle (no metadata.json at {base})")
        return
    changed = _git("diff", "--name-only", base, "--", rel)
    untracked = _git("ls-files", "--others", "--exclude-standard", "--", rel)
    if changed is None:
        r.fail("version_bump", f"cannot compare with git revision {base!r}")
        return
    files = [f for f in (changed + (untracked or "")).splitlines() if f.strip()]
    old_version = json.loads(old_text).get("version", "0")
    if not files:
        r.ok("version_bump", f"unchanged since {base}")
    elif _version_key(meta.get("version", "0")) > _version_key(old_version):
        r.ok("version_bump", f"{old_version} -> {meta.get('version')} ({len(files)} file(s) changed)")
    else:
        r.fail(
            "version_bump",
            f"{len(files)} file(s) changed since {base} (e.g. {files[0]}) but version is still {old_version}: "
            "bump 'version' and add a changelog entry",
        )


def _setup_cfg_requirements() -> dict[str, dict[str, str]]:
    """setup.cfg's requirements: ``{"install_requires": {name: specifier}, "<extra>": {...}}`` (names normalised)."""
    ini = configparser.ConfigParser()
    if not ini.read(REPO_ROOT / "setup.cfg", encoding="utf-8"):
        return {}
    groups: dict[str, str] = {}
    if ini.has_option("options", "install_requires"):
        groups["install_requires"] = ini.get("options", "install_requires")
    if ini.has_section("options.extras_require"):
        groups.update(ini.items("options.extras_require"))
    out: dict[str, dict[str, str]] = {}
    for group, text in groups.items():
        reqs = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", line)
            if m:
                reqs[_normalise(m.group(1))] = m.group(2).strip()
        out[group] = reqs
    return out


def _normalise(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def _exact_version(value: Any) -> bool:
    """``"1.6.1"``-like: a released version, not a range, a wildcard or a URL."""
    return isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)*([a-z]+\d*)?(\.post\d+)?", value.strip()) is not None


def _in_range(version: str, specifier: str) -> bool:
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # packaging comes with pip/setuptools; without it the ranges are not checked
        return True
    return SpecifierSet(specifier).contains(version, prereleases=True)


def check_metadata_packages(meta: dict, r: Report) -> None:
    name = "metadata_packages"
    required = meta.get("required_packages_version")
    if not isinstance(required, dict) or not required:
        r.fail(name, "needs a non-empty 'required_packages_version' object (package -> exact version)")
        return
    optional = meta.get("optional_packages_version", {})
    if not isinstance(optional, dict):
        r.fail(name, "'optional_packages_version' must be an object (package -> exact version)")
        return
    problems: list[str] = []
    reqs = _setup_cfg_requirements()
    install_requires = reqs.get("install_requires", {})
    extras = {pkg: spec for group, specs in reqs.items() if group != "install_requires" for pkg, spec in specs.items()}
    for field_name, pins in (("required_packages_version", required), ("optional_packages_version", optional)):
        for package, version in pins.items():
            key = _normalise(package)
            if key == OWN_PACKAGE:
                problems.append(
                    f"{field_name} pins {package}, which no package index serves (a packaged bundle carries its "
                    "'common' copy): pin the third-party packages instead"
                )
            elif not _exact_version(version):
                problems.append(f"{field_name}: {package} {version!r} is not an exact version")
            else:
                spec = install_requires.get(key, extras.get(key, ""))
                if not _in_range(version.strip(), spec):
                    problems.append(f"{field_name}: {package} {version} is outside setup.cfg's range {spec!r}")
    pinned = {_normalise(p) for p in required}
    missing = sorted(set(install_requires) - pinned - {OWN_PACKAGE})
    if missing:
        problems.append("required_packages_version lacks setup.cfg install_requires " + ", ".join(missing))
    if "optional_packages_version" in meta:
        # MONAI maps the older name optional_packages_version onto required_packages_version when it reads the
        # metadata (monai.bundle.utils.DEPRECATED_ID_MAPPING), replacing it: the generator schema requires the older
        # name, so it must carry every required pin too, or a run would see fewer pins than the file declares
        lost = sorted(p for p, v in required.items() if str(optional.get(p)) != str(v))
        if lost:
            problems.append(
                "optional_packages_version replaces required_packages_version when MONAI reads the metadata, "
                "but lacks (or pins another version of) " + ", ".join(lost)
            )
    for package, field_name in VERSION_FIELDS.items():
        pin = next((str(v) for p, v in required.items() if _normalise(p) == package), None)
        if pin is not None and meta.get(field_name) is not None and pin != str(meta[field_name]):
            problems.append(f"required_packages_version pins {package} {pin} but {field_name} is {meta[field_name]}")
    if problems:
        r.fail(name, "; ".join(problems))
    else:
        r.ok(name, f"{len(required)} required, {len(optional)} optional package(s) pinned")


# ----------------------------------------------------------------------------------------------------------------
# configs


def _label(files: Sequence[Path]) -> str:
    """``train.json`` for one file, ``train+evaluate+quick`` for several."""
    return files[0].name if len(files) == 1 else "+".join(f.stem for f in files)


def load_config(files: Sequence[Path], meta_file: Path | None = None) -> Any:
    """A parsed (macros and relative ids resolved, nothing evaluated) ``ConfigParser`` of ``files`` merged in order."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    with _quiet():
        parser.read_config([str(f) for f in files])
        if meta_file is not None and meta_file.is_file():
            parser.read_meta(str(meta_file))
        parser.parse(reset=True)
    return parser


def _walk(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(id, value) of every node of a config, ids joined with ``#``."""
    yield prefix, config
    if isinstance(config, dict):
        items: Any = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return
    for k, v in items:
        yield from _walk(v, f"{prefix}#{k}" if prefix else str(k))


def _references(config: Any) -> Iterator[tuple[str, str]]:
    """(id of the item, referenced id) for every ``@ref`` in a config, both with ``#`` separators."""
    from monai.bundle.reference_resolver import ReferenceResolver

    for item_id, value in _walk(config):
        if isinstance(value, str):
            for ref in ReferenceResolver.match_refs_pattern(value):
                yield item_id, ref.replace("::", "#")


def _is_under(item_id: str, root: str) -> bool:
    return item_id == root or item_id.startswith(root + "#")


def check_configs(b: Bundle, r: Report) -> dict[str, Any]:
    """Parse every config and the combinations the commands use; return the parsers by label."""
    parsers: dict[str, Any] = {}
    singles = sorted(p for p in b.configs.glob("*.json") if p.name != "metadata.json") if b.configs.is_dir() else []
    for path in singles:
        name = f"config_parse:{path.name}"
        try:
            parsers[path.name] = load_config([path], b.meta_file)
            r.ok(name)
        except Exception as e:
            r.fail(name, f"{type(e).__name__}: {e}")

    train, inference, evaluate, quick = (
        b.config(n) for n in ("train.json", "inference.json", "evaluate.json", "quick.json")
    )
    combos: list[list[Path]] = [[train, evaluate, quick], [train, quick, *b.optional("smoke.json")]]
    if b.optional("smoke_inference.json"):
        combos.append([inference, *b.optional("smoke_inference.json")])
    for files in combos:
        label = _label(files)
        name = f"config_parse:{label}"
        if not all(f.is_file() for f in files):
            r.skip(name, "missing " + ", ".join(f.name for f in files if not f.is_file()))
            continue
        try:
            parsers[label] = load_config(files, b.meta_file)
            r.ok(name)
        except Exception as e:
            r.fail(name, f"{type(e).__name__}: {e}")

    # the runnable configurations: each must have the keys and resolvable references
    for label in ("train.json", "inference.json", _label([train, evaluate, quick])):
        parser = parsers.get(label)
        if parser is None:
            r.skip(f"config_keys:{label}", "not parsed")
            r.skip(f"config_refs:{label}", "not parsed")
            continue
        missing = [k for k in CONFIG_KEYS if k not in parser]
        if missing:
            r.fail(f"config_keys:{label}", "missing " + ", ".join(missing))
        else:
            r.ok(f"config_keys:{label}")
        dangling = sorted(
            {f"@{ref} (in {item or '<root>'})" for item, ref in _references(parser.get()) if ref not in parser}
        )
        if dangling:
            r.fail(f"config_refs:{label}", "unknown id(s): " + ", ".join(dangling[:10]))
        else:
            r.ok(f"config_refs:{label}")

    check_run_ids(parsers, r)
    return parsers


def check_run_ids(parsers: dict[str, Any], r: Report) -> None:
    train = parsers.get("train.json")
    if train is None:
        r.skip("run_ids:train.json", "train.json not parsed")
    else:
        missing = [k for k in ("training", "run") if k not in train]
        if missing:
            r.fail(
                "run_ids:train.json", "missing run id(s) " + ", ".join(missing) + " (define both 'training' and 'run')"
            )
        else:
            r.ok("run_ids:train.json")

    inference = parsers.get("inference.json")
    if inference is None:
        r.skip("run_ids:inference.json", "inference.json not parsed")
        return
    problems = [] if "run" in inference else ["missing run id 'run'"]
    init_refs = sorted(
        f"{item} -> @{ref}"
        for item, ref in _references(inference.get())
        if _is_under(ref, "initialize") and not _is_under(item, "initialize")
    )
    if init_refs:
        problems.append("items outside 'initialize' refer to initialize-only state: " + ", ".join(init_refs))
    if problems:
        r.fail("run_ids:inference.json", "; ".join(problems))
    else:
        r.ok("run_ids:inference.json")


def _presence_workflow_cls() -> type:
    """Build ``_PresenceWorkflow`` lazily: importing MONAI costs seconds and ``--help`` should not pay it."""
    from monai.bundle import ConfigWorkflow
    from monai.bundle.properties import BundlePropertyConfig

    class _PresenceWorkflow(ConfigWorkflow):
        """A ``ConfigWorkflow`` whose properties resolve to their raw config instead of being instantiated.

        MONAI's ``check_properties()`` tests ``hasattr(workflow, name)``, which parses the property: before
        ``initialize()`` that raises instead of reporting, and after it instantiates datasets and trainers
        (building loaders, writing phantom data into ``dataset_dir``) and stops at the first missing id with a
        KeyError. Presence of the config id is what the check is about, so only that is looked up; MONAI's own
        property tables and its optional-id consistency check are used unchanged.
        """

        def _get_property(self, name: str, property: dict) -> Any:
            prop_id = property[BundlePropertyConfig.ID]
            if prop_id not in self.parser:
                raise AttributeError(f"config id {prop_id!r} of property {name!r} is missing")
            return self.parser[prop_id]

    return _PresenceWorkflow


def check_properties(b: Bundle, r: Report) -> None:
    from monai.bundle.properties import BundlePropertyConfig

    for workflow_type, config, missing_status in (("infer", "inference.json", "FAIL"), ("train", "train.json", "WARN")):
        name = f"properties:{workflow_type}"
        if not b.config(config).is_file() or not b.meta_file.is_file():
            r.skip(name, f"{config} or metadata.json is missing")
            continue
        try:
            with _quiet():
                workflow = _presence_workflow_cls()(
                    config_file=str(b.config(config)),
                    meta_file=str(b.meta_file),
                    logging_file=False,
                    workflow_type=workflow_type,
                )
                missing = workflow.check_properties() or []
        except Exception as e:
            r.add(missing_status, name, f"check_properties() raised {type(e).__name__}: {e}")
            continue
        if missing:
            ids = {n: str(workflow.properties[n].get(BundlePropertyConfig.ID, n)).replace("::", "#") for n in missing}
            listed = ", ".join(f"{n} ({i})" if i != n else n for n, i in ids.items())
            hint = (
                " (a GAN trainer need not fit MONAI's supervised train properties)" if workflow_type == "train" else ""
            )
            r.add(missing_status, name, f"{config} lacks required or misnamed properties: {listed}{hint}")
        else:
            r.ok(name, f"{config}: all required properties present")


# ----------------------------------------------------------------------------------------------------------------
# network shapes

_SAFE_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def _eval_size(expr: str, env: dict[str, int]) -> float:
    """Evaluate a spatial_shape expression such as ``"2**n*m"`` with integer arithmetic only (never ``eval``)."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _SAFE_OPS:
            return _SAFE_OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _SAFE_OPS:
            return _SAFE_OPS[type(node.op)](ev(node.operand))
        raise ValueError(f"unsupported spatial_shape expression {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def _variables(expr: str) -> set[str]:
    return {n.id for n in ast.walk(ast.parse(expr, mode="eval")) if isinstance(n, ast.Name)}


def bind_size_variables(shapes: Sequence[Sequence[Any]]) -> dict[str, int]:
    """One value for all one-letter variables of the input shapes: the smallest making every size >= 16."""
    exprs = [s for shape in shapes for s in shape if isinstance(s, str) and s.strip() != "*"]
    names = sorted(set().union(*(_variables(e) for e in exprs))) if exprs else []
    if not names:
        return {}
    for value in range(1, 9):
        env = dict.fromkeys(names, value)
        sizes = [_eval_size(e, env) for e in exprs]
        if all(float(s).is_integer() and s >= MIN_VARIABLE_SIZE for s in sizes):
            return env
    return dict.fromkeys(names, 4)


def input_size(entry: Any, env: dict[str, int]) -> int:
    if isinstance(entry, int):
        return entry
    if entry.strip() == "*":
        return ANY_SIZE
    return int(_eval_size(entry, env))


def _torch_dtype(name: str) -> Any:
    import torch

    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def dummy_input(spec: Any, env: dict[str, int], generator: Any) -> Any:
    """A batch of 2 matching one ``network_data_format.inputs`` entry (see the module docstring for the rules)."""
    import torch

    if not isinstance(spec, dict):
        return spec  # a plain scalar argument
    channels = int(spec.get("num_channels", 1))
    spatial = [input_size(s, env) for s in spec.get("spatial_shape", [])]
    dtype = _torch_dtype(spec.get("dtype", "float32"))
    value_range = spec.get("value_range") or []
    kind, fmt = spec.get("type"), str(spec.get("format", "")).lower()

    if not dtype.is_floating_point and dtype != torch.bool:
        if len(value_range) == 2:
            lo, hi = int(value_range[0]), int(value_range[1])
        else:
            lo, hi = 0, max(len(spec.get("channel_def") or {}), channels, 1) - 1
        shape = [BATCH] if not spatial and channels <= 1 else [BATCH, channels, *spatial]
        return torch.randint(lo, hi + 1, shape, generator=generator, dtype=torch.int64).to(dtype)
    shape = [BATCH, channels, *spatial]
    if kind == "noise":
        return torch.randn(shape, generator=generator).to(dtype)
    if fmt in ("labels", "classes", "segmentation") and channels > 1:
        ids = torch.randint(0, channels, [BATCH, *spatial], generator=generator)
        return torch.movedim(torch.nn.functional.one_hot(ids, channels), -1, 1).to(dtype)
    if len(value_range) == 2:
        lo, hi = float(value_range[0]), float(value_range[1])
        return (lo + (hi - lo) * torch.rand(shape, generator=generator)).to(dtype)
    return torch.randn(shape, generator=generator).to(dtype)


def expected_output_ok(spec: dict, shape: tuple[int, ...], env: dict[str, int]) -> bool:
    channels = int(spec.get("num_channels", 1))
    spatial = list(spec.get("spatial_shape", []))
    if not spatial and channels <= 1 and shape == (BATCH,):
        return True  # e.g. a discriminator score of shape (B,)
    if len(shape) != 2 + len(spatial) or shape[0] != BATCH or shape[1] != channels:
        return False
    for want, got in zip(spatial, shape[2:], strict=True):
        if isinstance(want, int):
            if want != got:
                return False
        elif want.strip() != "*" and _variables(want) <= set(env) and _eval_size(want, env) != got:
            return False  # sizes with variables the inputs do not bind are free
    return True


class NetworkError(Exception):
    """A config's network id is missing or is not a ``torch.nn.Module``."""


class WeightsMissing(Exception):
    """inference.json builds its network from models/model.pt, which is missing."""


def _instantiate(b: Bundle, config: Path, net_ids: Sequence[str]) -> tuple[Any, str]:
    """The first of ``net_ids`` that ``config`` defines, instantiated, and that id."""
    import torch

    parser = load_config([config], b.meta_file)
    net_id = next((k for k in net_ids if k in parser), None)
    if net_id is None:
        raise NetworkError(f"{config.name} defines none of {', '.join(repr(k) for k in net_ids)}")
    # the bundle's own bundle_root may locate itself from the command line; here the folder is known
    parser["bundle_root"] = str(b.root)
    parser.parse(reset=True)
    with _quiet():
        net = parser.get_parsed_content(net_id, instantiate=True)
    if not isinstance(net, torch.nn.Module):
        raise NetworkError(f"'{net_id}' in {config.name} is a {type(net).__name__}, not a torch.nn.Module")
    return net, net_id


def _weights_missing_stand_in(b: Bundle) -> Path | None:
    """train.json, when models/model.pt is missing and train.json exists: its network stands in for inference's."""
    if (b.root / WEIGHTS).is_file() or not b.config("train.json").is_file():
        return None
    return b.config("train.json")


def build_network(b: Bundle, net_ids: Sequence[str], stand_in: bool = False) -> tuple[Any, str, str]:
    """(network, its id, where it came from) of inference.json, else train.json.

    inference.json may build its network from models/model.pt (a generator's sizes travel with its weights). When
    that file is missing (``model_file`` FAILs), this raises ``WeightsMissing``; with ``stand_in``, train.json's
    network (the same class, at the sizes the recipe picks on this device) stands in.
    """
    inference = b.config("inference.json")
    if not inference.is_file():
        net, net_id = _instantiate(b, b.config("train.json"), net_ids)
        return net, net_id, "train.json"
    try:
        net, net_id = _instantiate(b, inference, net_ids)
        return net, net_id, "inference.json"
    except NetworkError:
        raise
    except Exception as inference_error:
        train = _weights_missing_stand_in(b)
        if train is None:
            raise
        if not stand_in:
            raise WeightsMissing(
                f"inference.json cannot build its network without {WEIGHTS} (its sizes travel with the weights)"
            ) from inference_error
        try:
            net, net_id = _instantiate(b, train, net_ids)
        except Exception:
            raise inference_error from None  # the error the bundle's users meet
        return net, net_id, f"{train.name}: inference.json needs the missing {WEIGHTS}"


def _first_output(out: Any, name: str) -> Any:
    if isinstance(out, dict):
        return out[name] if name in out else next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def check_network(b: Bundle, r: Report, meta: dict | None) -> None:
    import torch

    name = "network_shape"
    fmt = (meta or {}).get("network_data_format")
    if not isinstance(fmt, dict) or not isinstance(fmt.get("inputs"), dict) or not isinstance(fmt.get("outputs"), dict):
        r.skip(name, "metadata has no network_data_format with inputs and outputs")
        return
    if not fmt["inputs"] or not fmt["outputs"]:
        r.skip(name, "network_data_format.inputs/outputs is empty")
        return
    if not any(c.is_file() for c in (b.config("inference.json"), b.config("train.json"))):
        r.skip(name, "neither inference.json nor train.json exists")
        return
    try:
        net, net_id, source = build_network(b, ("network", "network_def"))
    except WeightsMissing as e:
        r.skip(name, str(e))
        return

    inputs: dict[str, Any] = fmt["inputs"]
    out_name, out_spec = next(iter(fmt["outputs"].items()))
    env = bind_size_variables([s.get("spatial_shape", []) for s in inputs.values() if isinstance(s, dict)])
    param = next(iter(net.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    args = [dummy_input(spec, env, generator) for spec in inputs.values()]
    args = [a.to(device) if isinstance(a, torch.Tensor) else a for a in args]
    described = ", ".join(
        f"{k}{tuple(a.shape) if isinstance(a, torch.Tensor) else '=' + repr(a)}"
        for k, a in zip(inputs, args, strict=True)
    )
    net.eval()
    with torch.no_grad():
        out = _first_output(net(*args), out_name)
    if not isinstance(out, torch.Tensor):
        r.fail(name, f"forward({described}) returned {type(out).__name__}, not a tensor")
        return
    shape = tuple(out.shape)
    if expected_output_ok(out_spec, shape, env):
        r.ok(
            name, f"{net_id}({described}) -> {out_name}{shape}" + ("" if source == "inference.json" else f" [{source}]")
        )
    else:
        channels, spatial = out_spec.get("num_channels"), out_spec.get("spatial_shape")
        want = f"(batch {BATCH}, num_channels={channels}, spatial_shape={spatial})"
        r.fail(name, f"{net_id}({described}) -> {shape}, but outputs.{out_name} says {want}")


def check_model_file(b: Bundle, r: Report) -> None:
    weights = b.root / WEIGHTS
    if weights.is_file():
        r.ok("model_file", f"{WEIGHTS} ({weights.stat().st_size / 1e6:.1f} MB)")
    else:
        r.fail(
            "model_file",
            f"{WEIGHTS} is missing: a zoo bundle ships its trained weights (add them, or list them in "
            "large_files.yml and run python -m monai.bundle download_large_files first)",
        )


def _checkpoint_keys(weights: Path) -> list[str]:
    """``key_in_ckpt`` values for ``ckpt_export``: one per network of a synthaug model file, else ``[""]``."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get(MODEL_INFO_KEY), dict):
        return [k for k, v in state.items() if k != MODEL_INFO_KEY and isinstance(v, dict)]
    return [""]


def check_ckpt_export(b: Bundle, r: Report) -> None:
    import torch

    name = "ckpt_export"
    reason = EXCLUDE_VERIFY_TORCHSCRIPT.get(b.root.name)
    if reason:
        r.skip(name, f"{b.root.name} is in EXCLUDE_VERIFY_TORCHSCRIPT: {reason}")
        return
    config = b.config("inference.json")
    if not config.is_file():
        r.skip(name, "inference.json is missing")
        return
    weights = b.root / WEIGHTS
    if not weights.is_file():
        # what ckpt_export does, minus loading the weights: build network_def and script it
        net, _, source = build_network(b, ("network_def",), stand_in=True)
        with _quiet():
            torch.jit.script(net.eval())
        r.ok(name, f"network_def scripts (torch.jit.script), without weights [{source}; no {WEIGHTS} to load]")
        return
    from monai.bundle import ckpt_export

    keys = _checkpoint_keys(weights)
    with tempfile.TemporaryDirectory(prefix="ckpt_export_") as tmp:
        for key in keys:
            target = Path(tmp) / f"model_{key or 'net'}.ts"
            with _quiet():
                ckpt_export(
                    net_id="network_def",
                    filepath=str(target),
                    ckpt_file=str(weights),
                    meta_file=str(b.meta_file),
                    config_file=str(config),
                    key_in_ckpt=key,
                    bundle_root=str(b.root),
                )
                torch.jit.load(str(target), map_location="cpu")
    which = f" [{', '.join(keys)}]" if keys != [""] else ""
    r.ok(name, f"network_def of inference.json + {WEIGHTS}{which} -> TorchScript, reloads")


def check_net_in_out(b: Bundle, r: Report, meta: dict | None) -> None:
    name = "verify_net_in_out"
    reason = EXCLUDE_VERIFY_SHAPE.get(b.root.name)
    if reason:
        r.skip(name, f"{b.root.name} is in EXCLUDE_VERIFY_SHAPE: {reason} (network_shape checks its inputs)")
        return
    fmt = (meta or {}).get("network_data_format")
    inputs = fmt.get("inputs") if isinstance(fmt, dict) else None
    if not isinstance(inputs, dict) or "image" not in inputs:
        r.fail(
            name,
            "network_data_format.inputs has no 'image', the only input MONAI's verify_net_in_out feeds: a network "
            "whose inputs are latents or label maps belongs in EXCLUDE_VERIFY_SHAPE (ci/verify_bundle.py) with the "
            "reason",
        )
        return
    config = b.config("inference.json")
    if not config.is_file():
        r.skip(name, "inference.json is missing")
        return
    from monai.bundle import verify_net_in_out

    def run(config_file: Path) -> None:
        with _quiet():
            verify_net_in_out(
                net_id="network_def",
                meta_file=str(b.meta_file),
                config_file=str(config_file),
                device="cpu",
                bundle_root=str(b.root),
            )

    try:
        run(config)
    except Exception:
        if _weights_missing_stand_in(b) is None:
            raise
        r.skip(name, f"inference.json cannot build its network without {WEIGHTS} (its sizes travel with the weights)")
        return
    r.ok(name, "network_def of inference.json: inputs.image -> outputs.pred channels and dtype match")


# ----------------------------------------------------------------------------------------------------------------
# smoke run


def _config_list_arg(files: Sequence[Path]) -> str:
    """The ``--config_file`` value for several files, as the README's commands write it: "['a','b']"."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def _run_logged(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, list[str]]:
    """Run ``cmd`` from the repository root; return (exit code or None on timeout, last lines of its output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        # a session of its own, so a timeout can stop data-loader workers too, not only the main process
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    return code, tail


def _snapshot(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _datalist_entries(content: Any) -> list[dict]:
    """Entries of a datalist: a list of dicts, or a dict whose list values are lists of dicts (Decathlon style)."""
    if isinstance(content, list) and content and all(isinstance(e, dict) for e in content):
        return content
    if isinstance(content, dict):
        return [e for v in content.values() if isinstance(v, list) for e in v if isinstance(e, dict)]
    return []


def _names_existing_file(entry: dict, bases: Sequence[Path]) -> bool:
    for value in entry.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item and any((base / item).is_file() for base in bases):
                return True  # an absolute path ignores the base
    return False


def check_smoke(b: Bundle, r: Report, meta: dict | None, workdir: Path, timeout: float) -> None:
    out, logs = workdir / "output", workdir / "logs"
    out.mkdir(parents=True, exist_ok=True)
    common = ["--meta_file", str(b.meta_file), "--bundle_root", str(b.root), "--output_dir", str(out)]
    if b.logging_file.is_file():
        common += ["--logging_file", str(b.logging_file)]
    needed = [b.config(n) for n in ("train.json", "quick.json", "inference.json")] + [b.meta_file]
    if not all(p.is_file() for p in needed):
        for n in ("smoke_train", "smoke_checkpoint", "smoke_inference", "smoke_outputs"):
            r.skip(n, "train.json, quick.json, inference.json or metadata.json is missing")
        return

    train_files = [b.config("train.json"), b.config("quick.json"), *b.optional("smoke.json")]
    with contextlib.suppress(Exception):  # a config that does not parse fails in config_parse and below
        if "max_epochs" not in load_config(train_files, b.meta_file):
            r.warn("smoke_max_epochs", "no top-level 'max_epochs': the --max_epochs 1 override reaches nothing")
    train_cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        _config_list_arg(train_files),
    ]
    train_cmd += [*common, "--max_epochs", "1"]
    code, tail = _run_logged(train_cmd, logs / "smoke_train.log", timeout)
    if code != 0:
        why = f"timed out after {timeout:g} s" if code is None else f"exit code {code}"
        r.fail("smoke_train", f"{why} (log: {logs / 'smoke_train.log'})", tail)
        for n in ("smoke_checkpoint", "smoke_inference", "smoke_outputs"):
            r.skip(n, "smoke training failed")
        return
    r.ok("smoke_train", _label(train_files) + ", 1 epoch")

    checkpoints = sorted(
        (p for p in out.rglob("*") if p.suffix in CHECKPOINT_SUFFIXES), key=lambda p: p.stat().st_mtime
    )
    if checkpoints:
        r.ok("smoke_checkpoint", str(checkpoints[-1].relative_to(out)))
    else:
        r.fail("smoke_checkpoint", f"no *.pt checkpoint under {out}")

    # the same size overrides as the training run, or the networks would not match the trained weights
    infer_files = [
        b.config("inference.json"),
        b.config("quick.json"),
        *b.optional("smoke.json"),
        *b.optional("smoke_inference.json"),
    ]
    infer_cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _config_list_arg(infer_files), *common]
    try:
        has_ckpt_key = "ckpt_path" in load_config(infer_files, b.meta_file)
    except Exception:  # a config that does not parse is reported by config_parse and fails below
        has_ckpt_key = False
    if has_ckpt_key and checkpoints:
        infer_cmd += ["--ckpt_path", str(checkpoints[-1])]
    before = _snapshot(out)
    code, tail = _run_logged(infer_cmd, logs / "smoke_inference.log", timeout)
    if code != 0:
        why = f"timed out after {timeout:g} s" if code is None else f"exit code {code}"
        r.fail("smoke_inference", f"{why} (log: {logs / 'smoke_inference.log'})", tail)
        r.skip("smoke_outputs", "smoke inference failed")
        return
    r.ok("smoke_inference", _label(infer_files))

    written = [p for p, t in _snapshot(out).items() if before.get(p) != t]
    data_files = [p for p in written if p.suffix not in (".json", ".log", *CHECKPOINT_SUFFIXES)]
    datalists = []
    for p in (p for p in written if p.suffix == ".json"):
        with contextlib.suppress(OSError, ValueError):
            entries = _datalist_entries(json.loads(p.read_text(encoding="utf-8")))
            if entries and _names_existing_file(entries[0], [p.parent, out, REPO_ROOT, b.root]):
                datalists.append(p)
    if not data_files:
        r.fail("smoke_outputs", f"inference wrote no data files under {out}")
    elif not datalists:
        r.fail("smoke_outputs", f"inference wrote {len(data_files)} file(s) but no datalist JSON naming them")
    else:
        names = ", ".join(str(p.relative_to(out)) for p in datalists)
        r.ok("smoke_outputs", f"{len(data_files)} file(s), datalist {names}")


# ----------------------------------------------------------------------------------------------------------------
# main


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


def main(argv: Sequence[str] | None = None) -> int:
    # --help prints the module docstring: the checks and the conventions a bundle follows to pass them
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle_dir", type=Path, help="the bundle folder, e.g. bundles/liver_lesion_gan")
    ap.add_argument("--smoke", action="store_true", help="also run a tiny training + inference (subprocesses)")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="with --smoke: write the runs into DIR and keep it")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per smoke subprocess")
    ap.add_argument("--base", metavar="REV", help="git revision to compare with: changed files need a version bump")
    args = ap.parse_args(argv)
    if not args.bundle_dir.is_dir():
        ap.error(f"{args.bundle_dir} is not a folder")
    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            # an old checkpoint there would let a failed run pass smoke_checkpoint
            ap.error(f"--keep {args.keep} exists and is not empty")
        args.keep.mkdir(parents=True, exist_ok=True)
        args.keep = args.keep.resolve()
    report = verify(args.bundle_dir, smoke=args.smoke, keep=args.keep, timeout=args.timeout, base=args.base)
    print(f"{args.bundle_dir}: {report.summary()}", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
