"""common.overrides: a mistyped or ill-typed command-line override stops a bundle run before any work, in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.bundle import check_overrides
from common.errors import DataError
from common.overrides import _from_argv, parse_cli_args
from common.run_lock import LOCK_NAME

REPO = Path(__file__).resolve().parents[1]
SPINE = REPO / "bundles" / "spine_stylegan2" / "configs"
LUNG = REPO / "bundles" / "lung_cisl_gan" / "configs"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _files(folder: Path, *names: str) -> list[str]:
    return [str(folder / f"{n}.json") for n in names]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def _refused(res: subprocess.CompletedProcess) -> str:
    """The one line a refused run ends with (no traceback)."""
    assert res.returncode != 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("synthaug: error: "), res.stderr[-3000:]
    return last


# --- through the real CLI: refused before any training --------------------------------------------------------------

TRAIN = ["training", "--config_file", str(_files(SPINE, "train", "quick", "smoke"))]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--batch_sz", "8"], ["unknown key --batch_sz", "did you mean --batch_size?"]),
        (["--num_epochs", "abc"], ["unknown key --num_epochs", "did you mean --max_epochs?"]),
        (["--max_epochs", "abc"], ["--max_epochs 'abc': max_epochs must be a whole number >= 1"]),
        (["--batch_size", "0"], ["--batch_size 0: batch_size must be a whole number >= 1"]),
        (["--gan_steps", "-5"], ["--gan_steps -5: gan_steps must be a whole number >= 1"]),
        (["--lr", "fast"], ["--lr 'fast': lr must be a number"]),
    ],
)
def test_training_refuses_bad_override_in_one_line(tmp_path, args, expected):
    line = _refused(_cli(*TRAIN, "--output_dir", str(tmp_path), *args))
    for part in expected:
        assert part in line, line
    assert "train.json" in line and "smoke.json" in line
    assert not (tmp_path / "gan").exists(), "refused before any training"
    assert not (tmp_path / LOCK_NAME).exists()


def test_keys_of_every_config_file_in_the_list_are_known(tmp_path):
    """With train.json + evaluate.json, evaluate's keys are known (and checked); several errors share one line."""
    files = str(_files(SPINE, "train", "evaluate", "quick", "smoke"))
    args = ["--config_file", files, "--output_dir", str(tmp_path), "--classifier_epochs", "0",
            "--n_synthetic_per_clas", "4"]  # fmt: skip
    line = _refused(_cli(*args))
    assert "--classifier_epochs 0: classifier_epochs must be a whole number >= 1" in line
    assert "unknown key --n_synthetic_per_clas" in line and "did you mean --n_synthetic_per_class?" in line
    assert "evaluate.json" in line
    assert not (tmp_path / "evaluation").exists()


def test_inference_refuses_unknown_key(tmp_path):
    files = str(_files(LUNG, "inference", "smoke_inference"))
    line = _refused(_cli("--config_file", files, "--output_dir", str(tmp_path), "--n_synthetic_per_clas", "4"))
    assert "unknown key --n_synthetic_per_clas" in line and "did you mean --n_synthetic_per_class?" in line
    assert not (tmp_path / "synthetic").exists()


def test_second_cli_run_into_a_locked_output_dir_names_the_holder(tmp_path):
    code = "import sys, time\nimport common.bundle\ncommon.bundle.lock_output_dir(sys.argv[1])\nprint('ok', flush=True)"
    holder = subprocess.Popen(
        [sys.executable, "-c", code + "\ntime.sleep(300)\n", str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        line = _refused(_cli(*TRAIN, "--output_dir", str(tmp_path), "--max_epochs", "1"))
        assert f"output_dir '{tmp_path}' is in use by another run (pid {holder.pid} on host" in line
        assert "started " in line and "command: python" in line
        assert not (tmp_path / "gan").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


@pytest.mark.slow
def test_correct_overrides_still_train_and_release_the_lock(tmp_path):
    res = _cli(*TRAIN, "--output_dir", str(tmp_path), "--max_epochs", "1", "--batch_size", "4", "--lr", "0.001")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "model.pt").exists()
    log = next((tmp_path / "gan").rglob("train_log.csv")).read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in log] == ["1"], "--max_epochs 1 was applied"
    assert not (tmp_path / LOCK_NAME).exists(), "released at exit"


# --- the check itself ----------------------------------------------------------------------------------------------


def _check(overrides: dict, *names: str, folder: Path = SPINE, tracking=None) -> None:
    check_overrides(overrides, _files(folder, *names), tracking)


def test_check_accepts_good_overrides():
    good = {
        "max_epochs": 3,
        "batch_size": 8,
        "gan_steps": 100,
        "lr": 1e-4,
        "seed": 1,
        "recipe": "paper",  # strings, lists, expressions and references are not type-checked
        "dataset_dir": "/data",
        "train#trainer#max_epochs": 2,
        "train::trainer::batch_size": 4,
        "image_size": "$16 * 2",
        "_meta_#version": "9",
    }
    _check(good, "train", "quick", "smoke")
    _check({}, "train")
    check_overrides()  # outside a monai.bundle run: nothing to check


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"max_epochs": 2.5}, "--max_epochs 2.5: max_epochs must be a whole number >= 1"),
        ({"max_epochs": True}, "--max_epochs True: max_epochs must be a whole number >= 1"),
        ({"train#trainer#max_epochs": "x"}, "train#trainer#max_epochs must be a whole number >= 1"),  # via @max_epochs
        ({"batch_size": -1}, "batch_size must be a whole number >= 1"),  # "$32 if ... else 16"-like expressions
        ({"seed": "abc"}, "--seed 'abc': seed must be a number"),
        ({"lr": float("nan")}, "lr must be a number"),
        ({"bach_size": 4}, "did you mean --batch_size?"),
        ({"zzzzzz": 4}, "unknown key --zzzzzz: no config file of this run defines it (config files"),
    ],
)
def test_check_refuses(overrides, expected):
    with pytest.raises(DataError) as info:
        _check(overrides, "train", "quick", "smoke")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_nested_key_may_add_an_argument_its_component_takes():
    skin = REPO / "bundles" / "skin_melanogan" / "configs"
    check_overrides({"gan#lapgan#level_epochs": [400, 1, 1]}, _files(skin, "train", "quick", "smoke"))
    with pytest.raises(
        DataError, match="unknown key --gan#lapgan#level_epoch: .*did you mean --gan#lapgan#level_epochs"
    ):
        check_overrides({"gan#lapgan#level_epoch": [400, 1, 1]}, _files(skin, "train", "quick", "smoke"))
    check_overrides({"checkpoint_loader#strict": False}, _files(LUNG, "inference"))  # a short MONAI name
    with pytest.raises(DataError, match="did you mean --checkpoint_loader#strict"):
        check_overrides({"checkpoint_loader#strikt": False}, _files(LUNG, "inference"))
    with pytest.raises(DataError, match="unknown key --model_info#foo"):  # a plain dict: nothing reads a new key
        check_overrides({"model_info#foo": 1}, _files(LUNG, "train"))


def test_zero_meaning_keys_and_non_size_numbers_only_need_a_number():
    # finetune_epochs 0: fine-tune for classifier_epochs; a_max is a HU value, not a size
    check_overrides({"finetune_epochs": 0, "a_max": -200.5}, _files(LUNG, "train", "evaluate"))
    _check({"mbstd_group_size": 0, "checkpoint_interval": 0}, "train")


def test_tracking_settings_add_their_keys():
    with pytest.raises(DataError, match="unknown key --experiment_name"):
        _check({"experiment_name": "x"}, "train")
    _check({"experiment_name": "x", "tracking_uri": "sqlite:///x.db"}, "train", tracking="mlflow")
    _check({"experiment_name": "x"}, "train", tracking=str(REPO / "common" / "tracking" / "mlflow.json"))


def test_parse_cli_args_reads_like_fire():
    pos, keys = parse_cli_args(
        ["training", "--config_file", "['a.json','b.json']", "--max_epochs", "5", "--a_min=-1000", "--flag",
         "--lr", "1e-4", "--name", "abc", "--max-steps", "3", "--", "--ignored", "1"]
    )  # fmt: skip
    assert pos == ["training"]
    assert keys == {
        "config_file": ["a.json", "b.json"],
        "max_epochs": 5,
        "a_min": -1000,
        "flag": True,
        "lr": 1e-4,
        "name": "abc",
        "max_steps": 3,
    }


def test_overrides_from_argv_of_a_monai_bundle_command(tmp_path):
    main = str(Path("/x/site-packages/monai/bundle/__main__.py"))
    files = str(_files(SPINE, "train"))
    run = _from_argv([main, "run", "training", "--config_file", files, "--meta_file", "m.json", "--batch_sz", "8"])
    assert run.overrides == {"batch_sz": 8} and run.config_files == json.loads(files.replace("'", '"'))
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": _files(SPINE, "train"), "max_epochs": "abc"}))
    run = _from_argv([main, "run", "--args_file", str(args), "--batch_size", "0"])
    assert run.overrides == {"max_epochs": "abc", "batch_size": 0}
    assert _from_argv(["pytest", "run", "--config_file", files]) is None
    assert _from_argv([main, "download", "--name", "x"]) is None
    with pytest.raises(DataError, match="did you mean --batch_size"):
        check_overrides(run.overrides | {"batch_sz": 1}, run.config_files)


# --- true/false keys -----------------------------------------------------------------------------------------------

BRAIN = REPO / "bundles" / "brain_pix2pix" / "configs"


@pytest.mark.parametrize(
    "value, expected",
    [("false", False), ("False", False), (False, False), (0, False), ("0", False),
     ("true", True), ("True", True), (True, True), (1, True), ("1", True)],
)  # fmt: skip
def test_bool_key_accepts_the_six_spellings_as_bools(value, expected):
    """Fire hands ``--use_anatomy false`` in as the string 'false' (truthy): the check turns it into False."""
    out = check_overrides({"use_anatomy": value}, _files(BRAIN, "train"))
    assert out["use_anatomy"] is expected


@pytest.mark.parametrize("value", ["no", "FALSE", "yes", 2, -1, 0.0, "abc", [1]])
def test_bool_key_refuses_other_values_in_one_line(value):
    with pytest.raises(DataError) as info:
        check_overrides({"use_anatomy": value}, _files(BRAIN, "train"))
    line = str(info.value)
    assert f"--use_anatomy {value!r}" in line and "use_anatomy is true or false" in line
    assert "pass one of false, False, 0, true, True, 1" in line and "\n" not in line


def test_bool_conversion_reaches_the_parser():
    """Through a real ``monai.bundle.ConfigParser``: every later ``@flag`` reference resolves to the bool."""
    from monai.bundle import ConfigParser

    config = {"flag": True, "nested": {"on": False}, "uses": "$'on' if @flag else 'off'", "copy": "@nested#on"}
    parser = ConfigParser(json.loads(json.dumps(config)))  # the parser keeps (and updates) the dict it is given
    parser.update({"flag": "false", "nested#on": "1"})  # what monai.bundle run --flag false --nested#on 1 does
    parser.parse()
    assert parser.get_parsed_content("uses") == "on", "the string 'false' is true: the bug"
    check_overrides({"flag": "false", "nested#on": "1"}, [config], parser=parser)
    assert parser["flag"] is False and parser["nested#on"] is True
    assert parser.get_parsed_content("uses") == "off" and parser.get_parsed_content("copy") is True


def test_bool_override_through_the_monai_cli(tmp_path):
    """``python -m monai.bundle run --flag false``: converted in the running workflow's parser at ``initialize``;
    a wrong spelling stops the run in one line before ``run``."""
    config = {
        "flag": True,
        "initialize": ["$common.bundle.start_run()", "$common.bundle.check_overrides()"],
        "run": ["$print('FLAG', repr(@flag), 'on' if @flag else 'off', flush=True)"],
        "imports": ["$import common", "$import common.bundle"],
    }
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    for text, shown in (("false", "FLAG False off"), ("0", "FLAG False off"), ("True", "FLAG True on")):
        res = _cli("--config_file", str(cfg), "--flag", text)
        assert res.returncode == 0, res.stderr[-3000:]
        assert shown in res.stdout, res.stdout[-2000:]
    line = _refused(_cli("--config_file", str(cfg), "--flag", "nope"))
    assert "--flag 'nope': flag is true or false: pass one of false, False, 0, true, True, 1" in line
