"""Protocol caches are keyed by the settings that made them (common.protocol.cache)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import torch

from common.protocol.cache import KEY_FILE, claim, describe, settings_digest


def _recipe(lr: float, width: int):
    from common.engines import ClassifierRecipe
    from common.networks import FridAdarCNN

    network = functools.partial(FridAdarCNN, in_channels=1, num_classes=3, image_size=16, channels=[width, 8, 8])
    return ClassifierRecipe(network=network, optimizer=functools.partial(torch.optim.SGD, lr=lr))


def test_same_settings_same_digest_and_any_change_differs():
    base = {"recipe": _recipe(0.01, 8), "steps": 100, "train": ["a.png", "b.png"]}
    assert settings_digest(base) == settings_digest(
        {"recipe": _recipe(0.01, 8), "steps": 100, "train": ["a.png", "b.png"]}
    )
    for changed in (
        {**base, "recipe": _recipe(0.02, 8)},  # an optimiser setting
        {**base, "recipe": _recipe(0.01, 16)},  # a network width
        {**base, "steps": 101},
        {**base, "train": ["a.png", "c.png"]},  # other training images
    ):
        assert settings_digest(changed) != settings_digest(base)


def test_closures_are_described_by_what_they_close_over():
    def make(k):
        return lambda: k

    assert describe(make(3)) == describe(make(3)) and describe(make(3)) != describe(make(4))


def test_digest_is_the_same_in_another_process():
    """No memory address or process-dependent value reaches the digest."""
    code = (
        "import functools, torch; from common.protocol.cache import settings_digest;"
        "from common.networks import FridAdarCNN;"
        "print(settings_digest({'n': functools.partial(FridAdarCNN, in_channels=1, num_classes=3,"
        " image_size=16, channels=[8, 8, 8]), 'o': functools.partial(torch.optim.SGD, lr=0.1),"
        " 'm': torch.nn.Conv2d(1, 2, 3)}))"
    )
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in "ab"
    }
    assert len(runs) == 1


def test_claim_keeps_same_settings_and_moves_others_aside(tmp_path):
    folder = tmp_path / "fold0" / "synthetic"
    claim(folder, {"steps": 100})
    (folder / "datalist.json").write_text("{}")
    claim(folder, {"steps": 100})
    assert (folder / "datalist.json").is_file(), "same settings: the finished work is reused"
    claim(folder, {"steps": 200})
    assert not (folder / "datalist.json").exists(), "other settings: redone"
    aside = tmp_path / "fold0" / "synthetic.stale-1"
    assert (aside / "datalist.json").is_file(), "nothing is deleted"
    assert json.loads((aside / KEY_FILE).read_text())["settings"] == {"steps": 100}


def test_a_folder_without_a_key_is_not_trusted(tmp_path):
    folder = tmp_path / "gan"
    folder.mkdir()
    (folder / "generator.pt").write_bytes(b"old")
    claim(folder, {"steps": 1})
    assert not (folder / "generator.pt").exists() and (tmp_path / "gan.stale-1" / "generator.pt").is_file()


def test_protocol_reuses_a_fold_only_with_the_settings_that_made_it(tmp_path):
    """Through the liver bundle's own protocol (smoke size): the same settings reuse the fold's GANs and images;
    another GAN budget trains new ones and keeps the old ones aside (before, any set of the right size was reused)."""
    from synthaug_testing import bundle_helpers

    from common.protocol.folds import load_or_make_splits, select

    _, workflow, _ = bundle_helpers("liver_lesion_gan")
    protocol = workflow(["train", "evaluate", "quick", "smoke"], tmp_path).parser.get_parsed_content(
        "evaluate#protocol"
    )
    splits = load_or_make_splits(str(tmp_path / "splits.json"), protocol.items, 3, 0, 0.15)
    train = select(protocol.items, splits["folds"][0]["train"])
    fold = protocol.output_dir / "fold0"

    first = protocol.synthesis.fold_set(0, train)
    done = fold / "gan" / "cyst" / "training_done.json"
    stamp = done.stat().st_mtime_ns
    assert protocol.synthesis.fold_set(0, train) == first and done.stat().st_mtime_ns == stamp, "reused as it was"
    assert not list(fold.glob("*.stale-*"))

    protocol.synthesis.gan_epochs += 1  # another setting: what the first settings made must not be handed back
    protocol.synthesis.fold_set(0, train)
    assert (fold / "gan.stale-1" / "cyst" / "training_done.json").is_file(), "the old GANs are kept aside"
    assert (fold / "synthetic.stale-1" / "datalist.json").is_file()
    assert json.loads(done.read_text())["epochs"] == protocol.synthesis.gan_epochs, "new GANs with the new setting"
