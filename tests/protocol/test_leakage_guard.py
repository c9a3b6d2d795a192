"""The leakage guard the bundle tests share (``assert_gans_saw_only_training_patients``) fails when a GAN was fed a
validation or test patient, or recorded nothing: the mutation check for the guard itself. The bundle tests run it
on what each protocol's GANs recorded (``training_done.json``'s ``patients``, written by ``fit_gan``)."""

from __future__ import annotations

import json

import pytest
from synthaug_testing import assert_gans_saw_only_training_patients


def _evaluation(tmp_path, fed: list[list[str]]):
    folds = [
        {"train": ["p1", "p2"], "val": ["p3"], "test": ["p4"]},
        {"train": ["p3", "p4"], "val": ["p1"], "test": ["p2"]},
    ]
    (tmp_path / "splits.json").write_text(json.dumps({"folds": folds}))
    for fold, patients in enumerate(fed):
        gan = tmp_path / f"fold{fold}" / "gan" / "cyst"
        gan.mkdir(parents=True)
        (gan / "training_done.json").write_text(json.dumps({"n_images": 4, "patients": patients}))
    return tmp_path


def test_training_patients_only_pass(tmp_path):
    assert assert_gans_saw_only_training_patients(_evaluation(tmp_path, [["p1", "p2"], ["p4"]])) == 2


@pytest.mark.parametrize("leaked", ["p4", "p3"], ids=["test_patient", "validation_patient"])
def test_a_leaked_patient_fails(tmp_path, leaked):
    with pytest.raises(AssertionError, match=leaked):
        assert_gans_saw_only_training_patients(_evaluation(tmp_path, [["p1", leaked], ["p3"]]))


def test_no_record_or_empty_record_fails(tmp_path):
    with pytest.raises(AssertionError, match="no patients recorded"):
        assert_gans_saw_only_training_patients(_evaluation(tmp_path, [["p1"], []]))
    (tmp_path / "fold1_missing").mkdir()
    with pytest.raises(AssertionError, match="no GAN training record"):  # fold 1's GAN left no record
        assert_gans_saw_only_training_patients(_evaluation(tmp_path / "fold1_missing", [["p1"]]))


def test_fit_gan_records_the_patients_it_was_fed(tmp_path):
    """The record the guard reads comes from fit_gan itself, not from the protocol's intent."""
    import torch
    from monai.transforms import Compose, EnsureTyped, Lambdad

    from common.engines import GANRecipe, fit_gan
    from common.losses import BCEObjective
    from common.networks import DCGANDiscriminator, DCGANGenerator

    items = [{"image": torch.rand(1, 16, 16) * 2 - 1, "label": 0, "patient": f"p{i % 3}"} for i in range(6)]
    recipe = GANRecipe(
        generator=lambda: DCGANGenerator(latent_dim=8, image_size=16, channels=(16, 8)),
        discriminator=lambda: DCGANDiscriminator(image_size=16, channels=(8, 16)),
        g_optimizer=lambda p: torch.optim.Adam(p, 1e-3),
        d_optimizer=lambda p: torch.optim.Adam(p, 1e-3),
        objective=BCEObjective(),
    )
    transforms = Compose([EnsureTyped(keys="image"), Lambdad(keys="label", func=lambda x: x)])
    fit_gan(recipe, items, transforms, str(tmp_path), max_epochs=1, batch_size=4, progress=False, tensorboard=False)
    done = json.loads((tmp_path / "training_done.json").read_text())
    assert done["patients"] == ["p0", "p1", "p2"] and done["n_images"] == 6
