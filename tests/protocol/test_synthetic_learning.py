"""SyntheticLearningProtocol's synthetic sets: a class absent from a fold's training split gets no synthetic images
(its conditional GAN never saw it), and the report's notes say so."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import torch

from common.data import load_classification_dataset
from common.data.datalist import read_datalist
from common.data.radiograph import radiograph_transforms
from common.engines import ClassifierRecipe
from common.engines.stylegan2 import stylegan2_recipe
from common.networks import FridAdarCNN
from common.protocol.synthetic_learning import SyntheticLearningProtocol


def _protocol(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (24, 28, 28), dtype=np.uint8), (np.arange(24) % 2).astype(np.uint8)[:, None]
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=images, train_labels=labels)
    data = load_classification_dataset(tmp_path / "pneumoniamnist.npz", cache_dir=tmp_path / "cache")
    tiny = {"num_classes": 2, "image_size": 16, "latent_dim": 16, "w_dim": 16, "channel_base": 128, "channel_max": 16}
    protocol = SyntheticLearningProtocol(
        data, str(tmp_path / "eval"),
        generators={"stylegan2": stylegan2_recipe(**tiny, batch_size=4, ema_kimg=0.1, mbstd_group_size=0)},
        classifier_recipe=ClassifierRecipe(
            partial(FridAdarCNN, num_classes=2, image_size=16, channels=(4, 8), hidden=8), partial(torch.optim.Adam)
        ),
        transforms=radiograph_transforms(16), folds=2, gan_batch_size=4, gan_steps=2, n_synthetic_per_class=5,
        classifier_epochs=1, classifier_batch_size=8, audit=False,
    )  # fmt: skip
    return data, protocol


def test_a_class_absent_from_training_gets_no_synthetic_images_and_a_note(tmp_path):
    data, protocol = _protocol(tmp_path)
    only_normal = [it for it in data["items"] if int(it["label"]) == 0]
    items, _ = protocol._synthetic(0, "stylegan2", only_normal)
    assert len(items) == 5 and {int(it["label"]) for it in items} == {0}
    assert any("no training image of class(es) ['pneumonia']" in n for n in protocol.notes)
    # both classes present: both generated, nothing noted
    data, protocol = _protocol(tmp_path / "both")
    items, _ = protocol._synthetic(0, "stylegan2", data["items"])
    assert sorted(int(it["label"]) for it in items) == [0] * 5 + [1] * 5 and not protocol.notes
    datalist = tmp_path / "both" / "eval" / "fold0" / "synthetic" / "stylegan2" / "datalist.json"
    assert len(read_datalist(str(datalist))["training"]) == 10 and json.loads(datalist.read_text())
