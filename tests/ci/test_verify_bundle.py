"""Tests of ci/verify_bundle.py on small fixture bundles built in tmp_path, and on every bundle of the repository.

The fixture is a minimal valid bundle whose ``network`` is a ``torch.nn.Linear`` "generator" (latent 8 -> 4) with
its weights in models/model.pt, declared in ``EXCLUDE_VERIFY_SHAPE`` as the zoo declares its GAN; each test breaks
it one way and expects exactly the matching FAIL line (the mutation checks of every check). The checks run
in-process (fast); two tests go through the command line to cover argument parsing and the exit status, one of
them on an image-input variant (a ``torch.nn.Conv2d``) that MONAI's ``verify_net_in_out`` runs on.

The metadata checks read the official schema files from ``<repository>/../shared/schema``; tests that need them
skip when that folder is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from synthaug_testing import load_ci_script

from ci.verify import metadata as verify_metadata
from ci.verify.base import sha256
from ci.verify.metadata import GENERAL_SCHEMA, GENERATOR_SCHEMA, expected_schema
from ci.verify.model import EXCLUDE_VERIFY_TORCHSCRIPT, MODEL_INFO_KEY
from ci.verify.network import EXCLUDE_VERIFY_SHAPE
from ci.verify.shapes import _eval_size, bind_size_variables

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "ci" / "verify_bundle.py"
RELEASE = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
SCHEMA_URL = RELEASE + "meta_schema_generator_20220718.json"  # the zoo's GAN bundles' schema (inputs.latent)
GENERAL_SCHEMA_URL = RELEASE + "meta_schema_20240725.json"


vb = load_ci_script("verify_bundle")
needs_schemas = pytest.mark.skipif(
    not verify_metadata.SCHEMA_DIR.is_dir(), reason=f"{verify_metadata.SCHEMA_DIR} (official schemas) is absent"
)
#: third-party pins: every install_requires package of setup.cfg, in its range, monai/torch/numpy as the *_version
PINS = {
    "monai": "1.6.1",
    "torch": "2.13.0",
    "numpy": "2.4.6",
    "pytorch-ignite": "0.5.5",
    "scipy": "1.17.1",
    "nibabel": "5.4.2",
    "itk": "5.4.7",
    "pillow": "13.0.0",
    "fire": "0.7.1",
    "tensorboard": "2.21.0",
    "tqdm": "4.70.1",
    "matplotlib": "3.11.2",
}
FIXTURE_NAME = "fixture_gan"

LOGGING_CONF = """\
[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def _tensor(kind: str, fmt: str, channels: int, spatial: list, dtype: str = "float32", value_range: list | None = None):
    return {
        "type": kind,
        "format": fmt,
        "modality": "n/a",
        "num_channels": channels,
        "spatial_shape": spatial,
        "dtype": dtype,
        "value_range": value_range or [],
        "is_patch_data": False,
        "channel_def": {},
    }


def _metadata() -> dict[str, Any]:
    return {
        "schema": SCHEMA_URL,
        "version": "0.2.0",
        "changelog": {"0.2.0": "tiny generator", "0.1.0": "first version", "0.0.1": "skeleton"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "required_packages_version": dict(PINS),
        # required by the generator schema; MONAI reads it as the older name of required_packages_version
        "optional_packages_version": dict(PINS),
        "name": "Fixture GAN",
        "task": "Generate 4-value vectors from an 8-value latent",
        "description": "A fixture bundle for the tests of ci/verify_bundle.py",
        "authors": "synthaug",
        "copyright": "Copyright (c) synthaug",
        "network_data_format": {
            "inputs": {"latent": _tensor("noise", "latent", 8, [])},
            "outputs": {"pred": _tensor("image", "magnitude", 4, [], value_range=[-1, 1])},
        },
    }


def _base_config() -> dict[str, Any]:
    return {
        "imports": ["$import json"],
        "bundle_root": ".",
        "device": "$torch.device('cpu')",
        "dataset_dir": "$@bundle_root + '/data'",
        "output_dir": "$@bundle_root + '/runs'",
        "max_epochs": 2,
        "network_def": {"_target_": "torch.nn.Linear", "in_features": 8, "out_features": 4},
        "network": "$@network_def.to(@device)",
    }


def _train() -> dict[str, Any]:
    steps = ["$torch.save(@network.state_dict(), @output_dir + '/model_epoch' + str(@max_epochs) + '.pt')"]
    return {**_base_config(), "training": steps, "run": list(steps)}


def _inference() -> dict[str, Any]:
    return {
        **_base_config(),
        "dataset": {"_target_": "Dataset", "data": "$[{'latent': torch.randn(8)} for _ in range(2)]"},
        "inferer": {"_target_": "SimpleInferer"},
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "$torch.utils.data.DataLoader(@dataset)",
            "network": "@network",
            "inferer": "@inferer",
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": [
            "$numpy.save(@output_dir + '/sample_0.npy', @network(torch.zeros(1, 8)).detach().numpy())",
            "$json.dump([{'image': 'sample_0.npy'}], open(@output_dir + '/datalist.json', 'w'))",
        ],
    }


def _write_json(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2), encoding="utf-8")


def make_bundle(root: Path) -> Path:
    """Write a minimal bundle that passes every static check into ``root``; return ``root``."""
    configs = root / "configs"
    _write_json(configs / "metadata.json", _metadata())
    _write_json(configs / "train.json", _train())
    _write_json(configs / "inference.json", _inference())
    _write_json(configs / "evaluate.json", {"run": ["$print('the protocol would run here')"]})
    _write_json(configs / "quick.json", {"max_epochs": 1})
    _write_json(configs / "multi_gpu_train.json", {"device": "$torch.device('cpu')"})
    (configs / "logging.conf").write_text(LOGGING_CONF, encoding="utf-8")
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("# Fixture bundle\n", encoding="utf-8")
    (root / "docs" / "data_license.txt").write_text("Procedural data, no licence needed.\n", encoding="utf-8")
    (root / "LICENSE").write_text("Apache License 2.0\n", encoding="utf-8")
    (root / "models").mkdir()
    torch.manual_seed(0)
    save_weights(root, torch.nn.Linear(8, 4))
    return root


def save_weights(root: Path, net: torch.nn.Module) -> None:
    """The trained weights of a bundle: ``models/model.pt``, a state dict (as MONAI's ckpt_export loads one)."""
    torch.save(net.state_dict(), root / "models" / "model.pt")


def use_network(root: Path, net: dict[str, Any]) -> None:
    """Make ``net`` (a config ``_target_`` dict) the fixture's network_def, with matching weights."""
    from monai.bundle import ConfigParser

    for name in ("train.json", "inference.json"):
        edit_json(root / "configs" / name, lambda c: c.update(network_def=net))
    save_weights(root, ConfigParser({"net": net}).get_parsed_content("net"))


def general_schema(meta: dict) -> None:
    """A network without a latent input follows the general schema (which has no optional_packages_version)."""
    meta["schema"] = GENERAL_SCHEMA_URL
    meta.pop("optional_packages_version")


def make_image_bundle(root: Path) -> Path:
    """The fixture as a downstream model: input ``image`` (1 x 16 x 16) -> ``pred`` (3 channels), general schema."""
    make_bundle(root)
    use_network(
        root, {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3, "padding": 1}
    )

    def change(m: dict) -> None:
        general_schema(m)
        m["network_data_format"] = {
            "inputs": {"image": _tensor("image", "magnitude", 1, [16, 16], value_range=[0, 1])},
            "outputs": {"pred": _tensor("image", "magnitude", 3, [16, 16])},
        }

    edit_json(root / "configs" / "metadata.json", change)
    return root


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    change(content)
    _write_json(path, content)


def run_verifier(bundle: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """Run the verifier in-process; return its exit status and printed lines."""
    code = vb.main([str(bundle), *args])
    return code, capsys.readouterr().out.splitlines()


def lines_with(lines: list[str], prefix: str) -> list[str]:
    return [line for line in lines if line.startswith(prefix)]


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # declared as the zoo declares its GAN bundle: a latent input is no ``image`` for MONAI's verify_net_in_out
    monkeypatch.setitem(EXCLUDE_VERIFY_SHAPE, FIXTURE_NAME, "fixture generator: its input is a latent")
    return make_bundle(tmp_path / FIXTURE_NAME)


# ------------------------------------------------------------------------------------------------------------
# the valid bundle


def test_valid_bundle_passes(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_verifier(bundle, capsys)
    assert lines_with(lines, "FAIL") == [], lines
    assert code == 0
    for name in (
        "required_files",
        "model_file",
        "no_scripts_dir",
        "logging_conf",
        "large_files",
        "file_sizes",
        "metadata_schema",
        "metadata_schema_url",
        "metadata_version",
        "metadata_packages",
        "config_parse:train.json",
        "config_parse:inference.json",
        "config_parse:evaluate.json",
        "config_parse:quick.json",
        "config_parse:train+evaluate+quick",
        "config_parse:train+quick",
        "config_keys:train.json",
        "config_keys:inference.json",
        "config_keys:train+evaluate+quick",
        "config_refs:train.json",
        "config_refs:inference.json",
        "run_ids:train.json",
        "run_ids:inference.json",
        "properties:infer",
        "network_shape",
        "ckpt_export",
    ):
        assert any(line == f"PASS {name}" or line.startswith(f"PASS {name}:") for line in lines), (name, lines)
    # a GAN train.json lacks MONAI's supervised train properties: reported, never failed
    assert lines_with(lines, "WARN properties:train:"), lines
    assert "network(latent(2, 8)) -> pred(2, 4)" in "\n".join(lines)
    assert "PASS ckpt_export: network_def of inference.json + models/model.pt -> TorchScript, reloads" in lines
    assert lines_with(lines, f"SKIP verify_net_in_out: {FIXTURE_NAME} is in EXCLUDE_VERIFY_SHAPE: fixture generator")
    if verify_metadata.SCHEMA_DIR.is_dir():
        assert lines_with(lines, "PASS metadata_schema: valid against meta_schema_generator_20220718.json"), lines
        assert lines[-1].endswith("0 fail, 1 warn, 1 skip")


def test_image_bundle_passes_monai_verify_net_in_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A downstream-style bundle (input ``image``) is not excluded: MONAI's own verify_net_in_out runs and passes."""
    code, lines = run_verifier(make_image_bundle(tmp_path / "fixture_classifier"), capsys)
    assert lines_with(lines, "FAIL") == [] and code == 0, lines
    assert (
        "PASS verify_net_in_out: network_def of inference.json: inputs.image -> outputs.pred channels and dtype match"
        in lines
    )
    assert lines_with(lines, "PASS metadata_schema_url: meta_schema_20240725.json")


def test_image_bundle_with_wrong_output_channels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = make_image_bundle(tmp_path / "fixture_classifier")
    edit_json(
        b / "configs" / "metadata.json", lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=2)
    )
    code, lines = run_verifier(b, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL verify_net_in_out: ValueError: output channel number `3` doesn't match: `2`"), lines


def test_cli_exit_status(tmp_path: Path) -> None:
    """Through the command line, from the repository root, as CI calls it (in-process tests cover exit 1); on the
    image-input variant, which needs no EXCLUDE_VERIFY_SHAPE entry (the CLI process has only the real ones)."""
    bundle = make_image_bundle(tmp_path / "fixture_classifier")
    ok = subprocess.run([sys.executable, str(SCRIPT), str(bundle)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    if verify_metadata.SCHEMA_DIR.is_dir():
        assert all(line.split(" ", 1)[0] in ("PASS", "WARN") for line in lines[:-1]), ok.stdout
        assert lines[-1] == f"{bundle}: 29 pass, 0 fail, 1 warn, 0 skip"


def test_cli_rejects_a_missing_folder(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "is not a folder" in result.stderr


# ------------------------------------------------------------------------------------------------------------
# one break at a time


@pytest.mark.parametrize(
    "relative",
    ["docs/data_license.txt", "configs/quick.json", "configs/logging.conf", "LICENSE", "docs/README.md"],
)
def test_missing_file(bundle: Path, capsys: pytest.CaptureFixture[str], relative: str) -> None:
    (bundle / relative).unlink()
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert f"FAIL required_files: missing {relative}" in lines


def test_missing_models_folder(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(bundle / "models")
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert "FAIL required_files: missing models/" in lines
    assert lines_with(lines, "FAIL model_file: models/model.pt is missing")


def test_missing_weights(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No models/model.pt: a recipe, not a model. ckpt_export still scripts network_def, without weights."""
    (bundle / "models" / "model.pt").unlink()
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL model_file: models/model.pt is missing: a zoo bundle ships its trained weights (add them, or list them "
        "in large_files.yml and run python -m monai.bundle download_large_files first)"
    ]
    assert (
        "PASS ckpt_export: network_def scripts (torch.jit.script), without weights "
        "[inference.json; no models/model.pt to load]" in lines
    )


def test_inference_network_built_from_missing_weights(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """inference.json builds its network from models/model.pt (as the generator bundles do), which is missing:
    network_shape SKIPs, ckpt_export scripts train.json's network instead, model_file FAILs."""
    (bundle / "models" / "model.pt").unlink()
    edit_json(
        bundle / "configs" / "inference.json",
        lambda c: c.update(
            network_def={
                "_target_": "torch.nn.Linear",
                "in_features": "$torch.load(@bundle_root + '/models/model.pt')['weight'].shape[1]",
                "out_features": 4,
            }
        ),
    )
    code, lines = run_verifier(bundle, capsys)
    assert code == 1 and [line.split(":")[0] for line in lines if line.startswith("FAIL")] == ["FAIL model_file"], lines
    assert (
        "SKIP network_shape: inference.json cannot build its network without models/model.pt "
        "(its sizes travel with the weights)" in lines
    )
    assert lines_with(
        lines,
        "PASS ckpt_export: network_def scripts (torch.jit.script), without weights "
        "[train.json: inference.json needs the missing models/model.pt",
    )


def test_missing_metadata_skips_what_needs_it(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "configs" / "metadata.json").unlink()
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert "FAIL required_files: missing configs/metadata.json" in lines
    assert lines_with(lines, "SKIP metadata_schema:")
    assert lines_with(lines, "SKIP network_shape:")


def test_scripts_folder(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "scripts").mkdir()
    (bundle / "scripts" / "__init__.py").write_text("", encoding="utf-8")
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL no_scripts_dir: scripts/ exists")


@needs_schemas
@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels="4"), "outputs/pred/num_channels"),
        (lambda m: m["network_data_format"]["inputs"]["latent"].pop("dtype"), "inputs/latent: 'dtype'"),
        (lambda m: m["network_data_format"].pop("outputs"), "network_data_format: 'outputs'"),
        (lambda m: m.pop("authors"), "(top level): 'authors'"),
        (lambda m: m.update(references="Frid-Adar 2018"), "references"),
        (lambda m: m.pop("optional_packages_version"), "(top level): 'optional_packages_version'"),
        (
            lambda m: m["network_data_format"].update(inputs={"z": m["network_data_format"]["inputs"]["latent"]}),
            "network_data_format/inputs: 'latent' is a required property",
        ),
    ],
    ids=[
        "channels-as-string",
        "no-dtype",
        "no-outputs",
        "no-authors",
        "references-not-a-list",
        "no-optional",
        "no-latent",
    ],
)
def test_invalid_metadata(bundle: Path, capsys: pytest.CaptureFixture[str], change: Callable, where: str) -> None:
    edit_json(bundle / "configs" / "metadata.json", change)
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    failures = lines_with(lines, "FAIL metadata_schema:")
    assert len(failures) == 1 and where in failures[0], lines
    assert "invalid against meta_schema_generator_20220718.json" in failures[0]


@needs_schemas
def test_official_schemas_accept_our_input_kinds() -> None:
    """The generator schema takes a latent plus a class-id condition (lung, spine); the general one a label-map input
    (brain_pix2pix) and an image input (the exported downstream models)."""
    import jsonschema

    generator = json.loads((verify_metadata.SCHEMA_DIR / GENERATOR_SCHEMA).read_text(encoding="utf-8"))
    general = json.loads((verify_metadata.SCHEMA_DIR / GENERAL_SCHEMA).read_text(encoding="utf-8"))
    meta = _metadata()
    meta["network_data_format"]["inputs"]["condition"] = _tensor("label", "classes", 1, [], "int64", [0, 2])
    jsonschema.validate(meta, generator)
    meta["network_data_format"]["inputs"] = {"condition": _tensor("label", "labels", 6, [128, 128], value_range=[0, 1])}
    jsonschema.validate(meta, general)
    meta["network_data_format"]["inputs"] = {"image": _tensor("image", "magnitude", 1, [64, 64])}
    jsonschema.validate(meta, general)
    assert expected_schema(meta) == GENERAL_SCHEMA and expected_schema(_metadata()) == GENERATOR_SCHEMA


def test_schema_folder_absent_skips(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify_metadata, "SCHEMA_DIR", tmp_path / "no_shared" / "schema")
    code, lines = run_verifier(bundle, capsys)
    assert (
        lines_with(lines, "SKIP metadata_schema: ")
        and "never downloaded" in lines_with(lines, "SKIP metadata_schema")[0]
    )
    assert code == 0, lines


@needs_schemas
def test_schema_copy_that_is_not_the_official_file(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local schema that differs from the published bytes (a loosened copy) is refused, not trusted."""
    copy = tmp_path / "schema"
    shutil.copytree(verify_metadata.SCHEMA_DIR, copy)
    loosened = json.loads((copy / GENERATOR_SCHEMA).read_text(encoding="utf-8"))
    loosened["required"] = []
    (copy / GENERATOR_SCHEMA).write_text(json.dumps(loosened), encoding="utf-8")
    monkeypatch.setattr(verify_metadata, "SCHEMA_DIR", copy)
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert (
        lines_with(lines, "FAIL metadata_schema: ")
        and "is not the official file" in lines_with(lines, "FAIL metadata_schema")[0]
    )


@needs_schemas
def test_schema_check_never_downloads(
    bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MONAI's verify_metadata downloads the schema only when its ``filepath`` is missing: here it never is."""
    import monai.apps.utils

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("verify_bundle tried to download")

    monkeypatch.setattr(monai.apps.utils, "urlretrieve", no_network)
    monkeypatch.setattr(monai.apps.utils, "urlopen", no_network)
    code, lines = run_verifier(bundle, capsys)
    assert lines_with(lines, "PASS metadata_schema: valid against meta_schema_generator_20220718.json") and code == 0


def test_invalid_metadata_json(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "configs" / "metadata.json").write_text("{ not json", encoding="utf-8")
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL metadata_schema: configs/metadata.json is not valid JSON")


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        (
            GENERAL_SCHEMA_URL,
            "'schema' names meta_schema_20240725.json, but it has a latent input (a generator): "
            "the zoo uses meta_schema_generator_20220718.json",
        ),
        (RELEASE + "meta_schema_20220324.json", "not an official MONAI schema"),
    ],
    ids=["general-for-a-generator", "unknown"],
)
def test_schema_url_names_another_schema(
    bundle: Path, capsys: pytest.CaptureFixture[str], schema: str, reason: str
) -> None:
    edit_json(bundle / "configs" / "metadata.json", lambda m: m.update(schema=schema))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    failures = lines_with(lines, "FAIL metadata_schema_url:")
    assert len(failures) == 1 and reason in failures[0], lines


@pytest.mark.parametrize(
    ("version", "reason"),
    [("0.3.0", "is not a changelog key"), ("0.1.0", "is not the newest changelog key (0.2.0)")],
)
def test_version_changelog_mismatch(
    bundle: Path, capsys: pytest.CaptureFixture[str], version: str, reason: str
) -> None:
    edit_json(bundle / "configs" / "metadata.json", lambda m: m.update(version=version))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert f"FAIL metadata_version: version {version} {reason}" in "\n".join(lines), lines


def test_version_order_is_numeric(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0.10.0 is newer than 0.9.0 although it sorts before it as a string."""
    edit_json(
        bundle / "configs" / "metadata.json",
        lambda m: m.update(version="0.10.0", changelog={"0.10.0": "b", "0.9.0": "a"}),
    )
    code, lines = run_verifier(bundle, capsys)
    assert "PASS metadata_version: 0.10.0" in lines and code == 0, lines


def _pins(**changes: str | None) -> dict[str, str]:
    pins = {**PINS, **changes}
    return {k: v for k, v in pins.items() if v is not None}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda m: m["required_packages_version"].update({"synthaug-bundles": "0.2.0"}),
            "required_packages_version pins synthaug-bundles, which no package index serves",
        ),
        (
            lambda m: m.update(required_packages_version=_pins(nibabel=">=5.0")),
            "nibabel '>=5.0' is not an exact version",
        ),
        (lambda m: m.update(required_packages_version=_pins(tqdm=None)), "lacks setup.cfg install_requires tqdm"),
        (
            lambda m: m.update(required_packages_version=_pins(monai="1.5.2")),
            "pins monai 1.5.2 but monai_version is 1.6.1",
        ),
        (
            lambda m: m.update(required_packages_version=_pins(monai="1.7.0"), monai_version="1.7.0"),
            "monai 1.7.0 is outside setup.cfg's range",
        ),
        (
            lambda m: m.update(optional_packages_version=_pins(scipy=None)),
            "optional_packages_version replaces required_packages_version when MONAI reads the metadata, but lacks",
        ),
        (lambda m: m.pop("required_packages_version"), "needs a non-empty 'required_packages_version'"),
    ],
    ids=[
        "own-package",
        "range",
        "missing-package",
        "monai-version",
        "outside-setup-cfg",
        "optional-drops-pins",
        "none",
    ],
)
def test_bad_package_pins(bundle: Path, capsys: pytest.CaptureFixture[str], change: Callable, reason: str) -> None:
    edit_json(bundle / "configs" / "metadata.json", change)
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    failures = lines_with(lines, "FAIL metadata_packages:")
    assert len(failures) == 1 and reason in failures[0], lines


def test_optional_packages_may_add_to_the_required(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """E.g. opacus for a bundle's DP-SGD configuration, on top of the required pins."""
    edit_json(bundle / "configs" / "metadata.json", lambda m: m.update(optional_packages_version=_pins(opacus="1.6.0")))
    code, lines = run_verifier(bundle, capsys)
    assert "PASS metadata_packages: 12 required, 13 optional package(s) pinned" in lines and code == 0, lines


def test_repository_bundles_pin_the_same_packages() -> None:
    """Every bundle needs the same third-party packages (one ``common``), pinned at the same versions, none of them
    our own; a bundle may pin more (spine_stylegan2's DP arms need opacus, an extra of setup.cfg), never another
    version of a shared one."""
    pins = {
        b: json.loads((REPO_ROOT / "bundles" / b / "configs" / "metadata.json").read_text())[
            "required_packages_version"
        ]
        for b in BUNDLES
    }
    shared = set.intersection(*(set(p) for p in pins.values()))
    first = next(iter(pins.values()))
    assert all({k: p[k] for k in shared} == {k: first[k] for k in shared} for p in pins.values()), pins
    for package in set().union(*pins.values()):
        assert len({p[package] for p in pins.values() if package in p}) == 1, f"{package} pinned at several versions"
    assert (
        "synthaug-bundles" not in shared and {"monai", "torch", "pytorch-ignite", "nibabel", "itk", "pillow"} <= shared
    )
    assert json.loads((REPO_ROOT / "bundles" / "spine_stylegan2" / "configs" / "metadata.json").read_text())[
        "required_packages_version"
    ].get("opacus"), "the DP bundle pins opacus"


def test_missing_training_id(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_json(bundle / "configs" / "train.json", lambda c: c.pop("training"))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL run_ids:train.json: missing run id(s) training")


def test_missing_inference_run(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_json(bundle / "configs" / "inference.json", lambda c: c.pop("run"))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL run_ids:inference.json: missing run id 'run'")


def test_inference_depends_on_initialize(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def change(c: dict) -> None:
        c["initialize"] = ["$@network_def.load_state_dict(torch.load('model.pt'))"]
        c["network"] = "$@initialize#0 or @network_def"

    edit_json(bundle / "configs" / "inference.json", change)
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL run_ids:inference.json: items outside 'initialize' refer to initialize-only state")


@pytest.mark.parametrize("key", ["output_dir", "network_def", "dataset_dir"])
def test_missing_config_key(bundle: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    edit_json(bundle / "configs" / "inference.json", lambda c: c.pop(key))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert f"FAIL config_keys:inference.json: missing {key}" in lines


def test_dangling_reference(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_json(bundle / "configs" / "train.json", lambda c: c.update(network="$@network_dfe.to(@device)"))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL config_refs:train.json: unknown id(s): @network_dfe (in network)")


def test_config_that_does_not_parse(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "configs" / "quick.json").write_text('{"max_epochs": 1,', encoding="utf-8")
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL config_parse:quick.json:")
    assert lines_with(lines, "FAIL config_parse:train+evaluate+quick:")


def test_missing_infer_property_fails(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_json(bundle / "configs" / "inference.json", lambda c: c.pop("evaluator"))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL properties:infer: inference.json lacks required or misnamed properties: evaluator")


def test_wrong_output_shape(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edit_json(
        bundle / "configs" / "metadata.json",
        lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=5),
    )
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL network_shape: network(latent(2, 8)) -> (2, 4), but outputs.pred says")


def test_wrong_input_shape(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A latent size the network does not take is a FAIL of the same check, not a crash."""
    edit_json(
        bundle / "configs" / "metadata.json",
        lambda m: m["network_data_format"]["inputs"]["latent"].update(num_channels=7),
    )
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL network_shape: RuntimeError")


# ------------------------------------------------------------------------------------------------------------
# networks: conditional generators, spatial expressions

FIXTURE_NETS = '''
import torch


class CondGenerator(torch.nn.Module):
    """forward(z, labels): a conditional generator, as a cGAN/ACGAN bundle has one."""

    def __init__(self, latent: int = 8, classes: int = 3, channels: int = 1, size: int = 8) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(classes, latent)
        self.fc = torch.nn.Linear(latent, channels * size * size)
        self.shape = [channels, size, size]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(z * self.embed(labels))).view([-1] + self.shape)


class Unscriptable(torch.nn.Linear):
    """A Linear whose forward TorchScript cannot compile (a comprehension with ``if``), as pix2pix's once was."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = [s for s in x.shape if s > 0]
        return super().forward(x.reshape(sizes))
'''


@pytest.fixture
def fixture_nets(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``synthaug_fixture_nets`` importable, for networks that torch.nn does not have."""
    (bundle.parent / "synthaug_fixture_nets.py").write_text(FIXTURE_NETS, encoding="utf-8")
    monkeypatch.syspath_prepend(str(bundle.parent))
    monkeypatch.delitem(sys.modules, "synthaug_fixture_nets", raising=False)


@pytest.fixture
def conditional_bundle(bundle: Path, fixture_nets: None) -> Path:
    net = {"_target_": "synthaug_fixture_nets.CondGenerator", "latent": 8, "classes": 3, "channels": 1, "size": 8}
    use_network(bundle, net)

    def change(m: dict) -> None:
        m["network_data_format"] = {
            "inputs": {
                "latent": _tensor("noise", "latent", 8, []),
                "condition": _tensor("label", "classes", 1, [], "int64", [0, 2]),
            },
            "outputs": {"pred": _tensor("image", "magnitude", 1, [8, 8], value_range=[-1, 1])},
        }

    edit_json(bundle / "configs" / "metadata.json", change)
    return bundle


def test_conditional_generator(conditional_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_verifier(conditional_bundle, capsys)
    assert "PASS network_shape: network(latent(2, 8), condition(2,)) -> pred(2, 1, 8, 8)" in lines, lines
    assert code == 0


def test_conditional_generator_inputs_in_the_wrong_order(
    conditional_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The order of network_data_format.inputs is the order of forward()'s arguments."""

    def swap(m: dict) -> None:
        inputs = m["network_data_format"]["inputs"]
        m["network_data_format"]["inputs"] = {"condition": inputs["condition"], "latent": inputs["latent"]}

    edit_json(conditional_bundle / "configs" / "metadata.json", swap)
    code, lines = run_verifier(conditional_bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL network_shape:"), lines


@pytest.mark.parametrize(
    ("in_shape", "out_shape", "passes"),
    [
        (["2**n", "2**n"], ["2**n", "2**n"], True),
        (["*", "*"], ["*", "*"], True),
        ([16, 24], [16, 24], True),
        ([16, 24], [24, 16], False),
        (["2**n", "2**n"], ["2**(n+1)", "2**(n+1)"], False),
    ],
)
def test_spatial_shapes(
    bundle: Path, capsys: pytest.CaptureFixture[str], in_shape: list, out_shape: list, passes: bool
) -> None:
    use_network(
        bundle, {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 3, "kernel_size": 3, "padding": 1}
    )

    def change(m: dict) -> None:
        general_schema(m)
        m["network_data_format"] = {
            "inputs": {"image": _tensor("image", "magnitude", 1, in_shape, value_range=[0, 1])},
            "outputs": {"pred": _tensor("image", "magnitude", 3, out_shape)},
        }

    edit_json(bundle / "configs" / "metadata.json", change)
    code, lines = run_verifier(bundle, capsys)
    assert bool(lines_with(lines, "PASS network_shape:")) == passes, lines
    assert (code == 0) == passes


def test_network_returning_a_tuple(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the first element is compared (e.g. an ACGAN discriminator returns (score, class logits))."""
    use_network(bundle, {"_target_": "torch.nn.LSTM", "input_size": 8, "hidden_size": 4, "batch_first": True})

    def change(m: dict) -> None:
        general_schema(m)
        m["network_data_format"]["inputs"] = {"sequence": _tensor("series", "sequence", 5, [8])}
        m["network_data_format"]["outputs"] = {"pred": _tensor("series", "sequence", 5, [4])}

    edit_json(bundle / "configs" / "metadata.json", change)
    code, lines = run_verifier(bundle, capsys)
    assert lines_with(lines, "PASS network_shape:") and code == 0, lines


def test_size_variables_are_shared() -> None:
    assert bind_size_variables([["2**n", "2**n*m"], []]) == {"m": 4, "n": 4}
    assert bind_size_variables([["2**n"]]) == {"n": 4}
    assert bind_size_variables([[64, "*"]]) == {}
    with pytest.raises(ValueError):
        _eval_size("__import__('os').getcwd()", {})


# ------------------------------------------------------------------------------------------------------------
# ckpt_export (TorchScript) and MONAI's verify_net_in_out


def test_ckpt_export_of_an_unscriptable_network(
    bundle: Path, fixture_nets: None, capsys: pytest.CaptureFixture[str]
) -> None:
    use_network(bundle, {"_target_": "synthaug_fixture_nets.Unscriptable", "in_features": 8, "out_features": 4})
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    failures = lines_with(lines, "FAIL ")
    assert len(failures) == 1 and failures[0].startswith("FAIL ckpt_export: ") and "Comprehension ifs" in failures[0], (
        lines
    )


def test_ckpt_export_of_weights_that_do_not_fit(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_weights(bundle, torch.nn.Linear(8, 5))
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    failures = lines_with(lines, "FAIL ")
    assert len(failures) == 1 and failures[0].startswith("FAIL ckpt_export: ") and "size mismatch" in failures[0], lines


def test_ckpt_export_of_a_synthaug_model_file(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A synthaug model file holds one state dict per generator plus the model information: each is exported
    (``ckpt_export --key_in_ckpt <name>``)."""
    nets = {name: torch.nn.Linear(8, 4).state_dict() for name in ("cyst", "metastasis")}
    torch.save({**nets, MODEL_INFO_KEY: {"class_names": ["cyst", "metastasis"]}}, bundle / "models" / "model.pt")
    code, lines = run_verifier(bundle, capsys)
    assert (
        "PASS ckpt_export: network_def of inference.json + models/model.pt [cyst, metastasis] -> TorchScript, reloads"
        in lines
    )
    assert code == 0, lines


def test_model_information_key_is_the_model_files() -> None:
    from common.engines.model_file import MODEL_INFO_KEY as MODEL_FILE_INFO_KEY

    assert MODEL_INFO_KEY == MODEL_FILE_INFO_KEY


def test_torchscript_exclusion_skips(
    bundle: Path, fixture_nets: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_network(bundle, {"_target_": "synthaug_fixture_nets.Unscriptable", "in_features": 8, "out_features": 4})
    monkeypatch.setitem(EXCLUDE_VERIFY_TORCHSCRIPT, FIXTURE_NAME, "uses a comprehension with if")
    code, lines = run_verifier(bundle, capsys)
    assert f"SKIP ckpt_export: {FIXTURE_NAME} is in EXCLUDE_VERIFY_TORCHSCRIPT: uses a comprehension with if" in lines
    assert code == 0, lines


def test_latent_input_not_excluded_from_verify_net_in_out(
    bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generator that is not declared in EXCLUDE_VERIFY_SHAPE fails: MONAI's check would feed it an image."""
    monkeypatch.delitem(EXCLUDE_VERIFY_SHAPE, FIXTURE_NAME)
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert lines_with(lines, "FAIL verify_net_in_out: network_data_format.inputs has no 'image'"), lines


def test_generator_bundles_are_declared_for_verify_net_in_out() -> None:
    """Every repository bundle whose network takes no ``image`` is declared with a reason (as the zoo's mednist_gan)."""
    for name in BUNDLES:
        meta = json.loads((REPO_ROOT / "bundles" / name / "configs" / "metadata.json").read_text())
        if "image" not in meta["network_data_format"]["inputs"]:
            assert EXCLUDE_VERIFY_SHAPE.get(name, "").strip(), name


# ------------------------------------------------------------------------------------------------------------
# large files


def test_large_file_must_be_listed(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = bundle / "models" / "model_fp64.pt"
    with open(weights, "wb") as f:  # sparse: 26 MB on paper, nothing on disk
        f.truncate(26 * 1000 * 1000)
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    assert "FAIL file_sizes: larger than 25 MB and not in large_files.yml: models/model_fp64.pt (26.0 MB)" in lines


def test_listed_large_file_passes(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = bundle / "models" / "model_fp64.pt"
    with open(weights, "wb") as f:
        f.truncate(26 * 1000 * 1000)
    digest = sha256(weights)
    (bundle / "models" / "large_files.yml").write_text(
        f'large_files:\n  - path: "models/model_fp64.pt"\n    url: "https://example.org/model_fp64.pt"\n'
        f'    hash_val: "{digest}"\n    hash_type: "sha256"\n',
        encoding="utf-8",
    )
    code, lines = run_verifier(bundle, capsys)
    assert "PASS file_sizes" in lines and "PASS large_files: 1 entry in models/large_files.yml" in lines, lines
    assert code == 0


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"url": "u", "hash_val": "{h}", "hash_type": "md5"}, "not sha256"),
        ({"hash_val": "{h}", "hash_type": "sha256"}, "missing url"),
        ({"url": "u", "hash_val": "abc", "hash_type": "sha256"}, "not a sha256 hex"),
        ({"url": "u", "hash_val": "{z}", "hash_type": "sha256"}, "differs from hash_val"),
    ],
    ids=["md5", "no-url", "short-hash", "wrong-hash"],
)
def test_bad_large_files_entry(
    bundle: Path, capsys: pytest.CaptureFixture[str], entry: dict[str, str], reason: str
) -> None:
    weights = bundle / "models" / "model_fp64.pt"
    weights.write_bytes(b"weights")
    values = {"h": sha256(weights), "z": "0" * 64}
    fields = "".join(f'    {k}: "{v.format(**values)}"\n' for k, v in entry.items())
    text = 'large_files:\n  - path: "models/model_fp64.pt"\n' + fields
    (bundle / "models" / "large_files.yml").write_text(text, encoding="utf-8")
    code, lines = run_verifier(bundle, capsys)
    assert code == 1
    failures = lines_with(lines, "FAIL large_files:")
    assert len(failures) == 1 and reason in failures[0], lines


# ------------------------------------------------------------------------------------------------------------
# smoke run (subprocesses)


@pytest.mark.slow
def test_smoke_run_on_fixture(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The smoke machinery itself: train writes a checkpoint, inference writes a file and a datalist."""
    keep = tmp_path / "smoke"
    code, lines = run_verifier(bundle, capsys, "--smoke", "--keep", str(keep), "--timeout", "300")
    for name in ("smoke_train", "smoke_checkpoint", "smoke_inference", "smoke_outputs"):
        assert lines_with(lines, f"PASS {name}"), lines
    assert code == 0
    assert (keep / "output" / "model_epoch1.pt").is_file()  # --max_epochs 1 reached the config
    assert (keep / "logs" / "smoke_train.log").is_file()


@pytest.mark.slow
def test_smoke_run_reports_a_failing_training(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "configs" / "smoke.json").write_text('{"training": ["$undefined_name"]}', encoding="utf-8")
    code, lines = run_verifier(bundle, capsys, "--smoke", "--timeout", "300")
    assert code == 1
    assert lines_with(lines, "FAIL smoke_train: exit code")
    assert any("undefined_name" in line for line in lines if line.startswith("    | ")), lines
    assert lines_with(lines, "SKIP smoke_inference: smoke training failed")


# ------------------------------------------------------------------------------------------------------------
# the repository's bundles

BUNDLES = sorted(p.name for p in (REPO_ROOT / "bundles").glob("*") if (p / "configs").is_dir())


@pytest.mark.parametrize("name", BUNDLES)
def test_repository_bundle(name: str) -> None:
    """Every check passes; until a bundle's trained weights land in models/model.pt, only ``model_file`` fails."""
    result = subprocess.run(
        [sys.executable, "ci/verify_bundle.py", f"bundles/{name}"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    failures = [line.split(":", 1)[0] for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    if (REPO_ROOT / "bundles" / name / "models" / "model.pt").is_file():
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert failures == ["FAIL model_file"], result.stdout + result.stderr
    assert lines_with(result.stdout.splitlines(), "PASS ckpt_export:"), result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_repository_bundle_smoke(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "ci/verify_bundle.py", f"bundles/{name}", "--smoke"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_changed_bundle_needs_a_version_bump(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    repo = tmp_path / "repo"
    b = make_bundle(repo / "bundles" / "toy")
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.email=ci@x", "-c", "user.name=ci", "add", ".")
    _git(repo, "-c", "user.email=ci@x", "-c", "user.name=ci", "commit", "-q", "-m", "release 0.2.0")
    monkeypatch.setattr(verify_metadata, "REPO_ROOT", repo)
    code, lines = run_verifier(b, capsys, "--base", "HEAD")
    assert lines_with(lines, "PASS version_bump: unchanged")
    (b / "docs" / "README.md").write_text("# Fixture bundle, better documented\n", encoding="utf-8")
    code, lines = run_verifier(b, capsys, "--base", "HEAD")
    assert code == 1 and lines_with(lines, "FAIL version_bump: 1 file(s) changed since HEAD (e.g. bundles/toy/docs")

    def bump(meta: dict) -> None:
        meta["version"] = "0.3.0"
        meta["changelog"]["0.3.0"] = "better docs"

    edit_json(b / "configs" / "metadata.json", bump)
    code, lines = run_verifier(b, capsys, "--base", "HEAD")
    assert lines_with(lines, "PASS version_bump: 0.2.0 -> 0.3.0")
