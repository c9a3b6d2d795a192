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
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# The checks are the package ci.verify, and bundle configs name ``common....`` in ``_target_``: both need the
# repository root on sys.path, and running this file puts ci/ (not the root) there.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ci.verify import verify  # noqa: E402
from ci.verify.smoke import DEFAULT_TIMEOUT_S  # noqa: E402


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
