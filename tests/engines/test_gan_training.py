"""The shared GAN engine: losses logged, checkpoints + resume, sample grids, NaN guard, determinism."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from monai.transforms import Compose

from common.data.datalist import read_datalist
from common.data.io import read_image
from common.engines import GANRecipe, fit_gan, fit_gans, generate_synthetic_set, latest_checkpoint, load_generators
from common.losses import ACGANObjective, BCEObjective
from common.networks import DCGANDiscriminator, DCGANGenerator


def _items(n=12, size=16, classes=2):
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.rand(1, size, size, generator=g) * 2 - 1, "label": i % classes, "patient": f"p{i}"}
        for i in range(n)
    ]


def _recipe(conditional=False, size=16, classes=2, objective=None):
    k = classes if conditional else 0
    return GANRecipe(
        generator=partial(DCGANGenerator, latent_dim=8, image_size=size, channels=(16, 8), num_classes=k),
        discriminator=partial(DCGANDiscriminator, image_size=size, channels=(8, 16), num_classes=k),
        g_optimizer=partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
        d_optimizer=partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999)),
        objective=objective or (ACGANObjective() if conditional else BCEObjective()),
    )


def _fit(tmp_path, epochs=2, **kw):
    return fit_gan(
        kw.pop("recipe", _recipe()),
        _items(),
        Compose([]),
        str(tmp_path),
        max_epochs=epochs,
        batch_size=4,
        tensorboard=False,
        progress=False,
        **kw,
    )


def test_fit_gan_writes_checkpoints_samples_and_log(tmp_path):
    out = _fit(tmp_path, epochs=2)
    assert (tmp_path / "generator.pt").is_file()
    assert latest_checkpoint(str(tmp_path / "checkpoints")).endswith("epoch=2.pt")
    assert (tmp_path / "samples_epoch_0002.png").is_file()
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch") and "g_loss" in log[0] and "d_loss" in log[0] and len(log) == 3
    assert len(out["history"]) == 2 and all(set(r) >= {"g_loss", "d_loss", "d_real", "d_fake"} for r in out["history"])
    assert json.loads((tmp_path / "training_done.json").read_text())["epochs"] == 2


def test_resume_continues_from_last_checkpoint(tmp_path):
    _fit(tmp_path, epochs=1)
    first = torch.load(tmp_path / "generator.pt")
    out = _fit(tmp_path, epochs=3)  # a later call with more epochs continues, it does not start over
    log = (tmp_path / "train_log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3"]
    assert latest_checkpoint(str(tmp_path / "checkpoints")).endswith("epoch=3.pt")
    assert len(out["history"]) == 2  # only epochs 2 and 3 ran in the second call
    assert any(not torch.equal(first[k], v) for k, v in torch.load(tmp_path / "generator.pt").items())


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(tmp_path):
    _fit(tmp_path, epochs=1)
    torn = tmp_path / "checkpoints" / "checkpoint_epoch=7.pt"  # MONAI's saver writes in place: a kill can leave this
    torn.write_bytes(b"PK\x03\x04 cut short")
    assert latest_checkpoint(str(tmp_path / "checkpoints")) == str(torn)
    assert latest_checkpoint(str(tmp_path / "checkpoints"), complete_only=True).endswith("epoch=1.pt")
    out = _fit(tmp_path, epochs=2)  # resumes from epoch 1 instead of failing on the torn file
    assert len(out["history"]) == 1
    assert [line.split(",")[0] for line in (tmp_path / "train_log.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_last_epoch_is_checkpointed_even_off_the_interval(tmp_path):
    _fit(tmp_path, epochs=3, checkpoint_interval=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert names == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
    assert _fit(tmp_path, epochs=3, checkpoint_interval=2)["history"] == [], "resumes at epoch 3: nothing to redo"


def test_finished_run_is_not_trained_again(tmp_path):
    _fit(tmp_path, epochs=2)
    out = _fit(tmp_path, epochs=2)
    assert out["history"] == []


def test_same_seed_same_weights(tmp_path):
    _fit(tmp_path / "a", epochs=1, seed=3)
    _fit(tmp_path / "b", epochs=1, seed=3)
    _fit(tmp_path / "c", epochs=1, seed=4)
    a, b, c = (torch.load(tmp_path / x / "generator.pt") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_nan_guard_stops_with_message(tmp_path):
    class Exploding(BCEObjective):
        def d_loss(self, *args):
            out = super().d_loss(*args)
            out["d_loss"] = out["d_loss"] * float("nan")
            return out

    with pytest.raises(FloatingPointError, match="non-finite loss .*d_loss.*epoch 1"):
        _fit(tmp_path, epochs=1, recipe=_recipe(objective=Exploding()))


def test_ema_generator_is_used_for_sampling(tmp_path):
    recipe = _recipe()
    recipe.ema_decay = 0.9
    out = _fit(tmp_path, epochs=1, recipe=recipe)
    state = torch.load(tmp_path / "generator.pt")
    assert "n_averaged" not in state  # the plain generator's keys: loadable into a fresh G
    DCGANGenerator(latent_dim=8, image_size=16, channels=(16, 8)).load_state_dict(state)
    assert out["generator"] is not None


@pytest.mark.parametrize("conditional", [False, True])
def test_fit_gans_per_class_or_conditional_then_sample(tmp_path, conditional):
    recipe = _recipe(conditional=conditional)
    folders = fit_gans(
        recipe,
        _items(),
        Compose([]),
        str(tmp_path),
        class_names=["a", "b"],
        per_class=not conditional,
        max_epochs=1,
        batch_size=4,
        tensorboard=False,
        progress=False,
    )
    assert set(folders) == ({"conditional"} if conditional else {"a", "b"})
    gens = load_generators(recipe, str(tmp_path), ["a", "b"])
    path = generate_synthetic_set(gens, ["a", "b"], 5, str(tmp_path / "syn"), a_min=-100, a_max=100, seed=1)
    items = read_datalist(path)["training"]
    assert [it["label"] for it in items] == [0] * 5 + [1] * 5
    assert all(it["synthetic"] and it["patient"] == "synthetic" for it in items)
    first = read_image(items[0]["image"])
    assert first.shape == (1, 16, 16) and first.min() >= -100 and first.max() <= 100
    again = read_datalist(
        generate_synthetic_set(gens, ["a", "b"], 5, str(tmp_path / "again"), a_min=-100, a_max=100, seed=1)
    )["training"]
    assert (read_image(again[0]["image"]) == first).all(), "same seed, same synthetic set"


def test_missing_generator_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no trained generator at .*generator.pt"):
        load_generators(_recipe(), str(tmp_path), ["a", "b"])


def test_per_class_needs_unconditional_objective(tmp_path):
    with pytest.raises(ValueError, match="per_class=True needs an unconditional"):
        fit_gans(
            _recipe(conditional=True),
            _items(),
            Compose([]),
            str(tmp_path),
            class_names=["a", "b"],
            per_class=True,
            max_epochs=1,
            batch_size=4,
        )


def test_gan_trainer_is_the_engine_a_bundle_runs(tmp_path):
    """``gan_trainer`` is the Ignite engine a bundle's ``train#trainer`` holds: ``max_epochs`` settable when it is
    built, ``.run()`` writes what ``fit_gan`` writes, extra handlers see the epoch's metrics before the checkpoint."""
    from ignite.engine import Engine, Events

    from common.engines import GANTrainer, gan_trainer

    seen = []

    class Probe:  # an extra handler (e.g. MLflow) reads the epoch's averages and runs before the checkpoint
        def attach(self, engine):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

        def __call__(self, engine):
            ckpt = tmp_path / "checkpoints" / f"checkpoint_epoch={engine.state.epoch}.pt"
            seen.append((engine.state.epoch, "g_loss" in engine.state.metrics, ckpt.exists()))

    trainer = gan_trainer(
        _recipe(), _items(), Compose([]), str(tmp_path), max_epochs=2, batch_size=4, tensorboard=False,
        progress=False, train_handlers=[Probe()],
    )  # fmt: skip
    assert isinstance(trainer, GANTrainer) and isinstance(trainer, Engine) and trainer.state.max_epochs == 2
    assert not (tmp_path / "generator.pt").exists(), "building the engine trains nothing"
    trainer.run()
    assert seen == [(1, True, False), (2, True, False)]
    result = trainer.state.result
    assert set(result) == {"generator", "discriminator", "generator_file", "history", "output_dir"}
    assert result["generator_file"] == str(tmp_path / "generator.pt") and (tmp_path / "generator.pt").is_file()
    done = json.loads((tmp_path / "training_done.json").read_text())
    assert done["epochs"] == 2 and done["iterations"] == 6 and len(result["history"]) == 2
    assert latest_checkpoint(str(tmp_path / "checkpoints")).endswith("epoch=2.pt")


def test_a_loader_given_by_id_trains_exactly_as_the_one_gan_trainer_builds(tmp_path):
    """A bundle shows its GAN's loader as ``train#dataloader`` (``gan_dataloader``) and hands it to ``gan_trainer``:
    the same images, repeats and padding, hence the same weights bit for bit, as when ``gan_trainer`` builds it."""
    from common.engines import MIN_EPOCH_STEPS, gan_dataloader, gan_trainer

    items, transforms = _items(), Compose([])
    kw = {"max_epochs": 1, "tensorboard": False, "progress": False, "total_steps": 25}
    # each built and run in turn, as a bundle run does (the latents come from the global stream the engine seeds)
    built = gan_trainer(_recipe(), items, transforms, str(tmp_path / "built"), batch_size=4, repeats=2, **kw)
    built.run()
    loader = gan_dataloader(items, transforms, batch_size=4, repeats=2, min_epoch_steps=MIN_EPOCH_STEPS)
    # 12 images x 2 repeats = 6 batches < MIN_EPOCH_STEPS: the list is repeated until an epoch has 24 batches
    assert len(loader) == 24 and len(loader.items) == 96
    given = gan_trainer(_recipe(), items, transforms, str(tmp_path / "given"), train_data_loader=loader, **kw)
    given.run()
    assert built.state.iteration == given.state.iteration == 48  # ceil(25 / 24) epochs
    a = torch.load(tmp_path / "built" / "generator.pt", weights_only=True)
    b = torch.load(tmp_path / "given" / "generator.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    done = json.loads((tmp_path / "given" / "training_done.json").read_text())
    assert done["n_images"] == 96 and done["batch_size"] == 4


def test_a_given_loader_must_use_the_transforms_the_run_seeds(tmp_path):
    from common.engines import gan_dataloader, gan_trainer

    loader = gan_dataloader(_items(), Compose([]), batch_size=4)
    with pytest.raises(ValueError, match="same object"):
        gan_trainer(_recipe(), _items(), Compose([]), str(tmp_path), max_epochs=1, train_data_loader=loader)
    loader = gan_dataloader(_items(), Compose([]), batch_size=4)
    with pytest.raises(ValueError, match="the loader decides it"):  # never ignored silently
        gan_trainer(_recipe(), _items(), loader.dataset.transform, str(tmp_path), max_epochs=1, batch_size=8,
                    train_data_loader=loader)  # fmt: skip


def test_epoch_padding_only_for_a_step_budget_and_never_under_privacy():
    from common.engines import MIN_EPOCH_STEPS, epoch_padding

    assert epoch_padding(100) == MIN_EPOCH_STEPS > 1
    assert epoch_padding(None) == 1 and epoch_padding(100, privacy=object()) == 1
