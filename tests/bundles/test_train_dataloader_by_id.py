"""The bundles that train one network show the GAN's loader as ``train#dataloader`` (model-zoo style): the engine
``train#trainer`` holds exactly that object, and changing it by id changes what the engine trains from."""

from __future__ import annotations

import pytest
from synthaug_testing import bundle_helpers

from common.engines import GANDataLoader, GANTrainer


@pytest.mark.parametrize("bundle", ["lung_cisl_gan", "spine_stylegan2", "brain_pix2pix"])
def test_train_dataloader_is_the_engines_loader_and_swappable_by_id(tmp_path, bundle):
    _, workflow, _ = bundle_helpers(bundle)
    wf = workflow(["train", "smoke"], tmp_path / "a")
    loader, trainer = wf.parser.get_parsed_content("train#dataloader"), wf.parser.get_parsed_content("train#trainer")
    assert isinstance(loader, GANDataLoader) and isinstance(trainer, GANTrainer)
    assert trainer.data_loader is loader
    # the transforms the run seeds and checkpoints are the ones the loader applies
    dataset = getattr(loader.dataset, "dataset", loader.dataset)
    assert dataset.transform is wf.parser.get_parsed_content("train#preprocessing")

    wf = workflow(["train", "smoke"], tmp_path / "b", **{"train#dataloader#batch_size": 2})
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.data_loader.batch_size == 2 and loader.batch_size != 2
