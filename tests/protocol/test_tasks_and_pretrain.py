"""Tasks (multi-class + each class vs rest) and the pretrain_synthetic+finetune arm of ClassificationProtocol."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch

import common.protocol.augmentation.fold_runner as fold_runner
from common.data import load_classification_dataset
from common.data.augment import ClassicAugmentation
from common.data.phantoms import LungSignPhantom
from common.data.transforms import roi_classification_transforms
from common.engines import ClassifierRecipe, GANRecipe
from common.losses import ACGANObjective
from common.networks import ACGANDiscriminator, ACGANGenerator, FridAdarCNN
from common.protocol import ClassificationProtocol
from common.protocol.tasks import make_tasks, relabel

NAMES = ["ground_glass", "calcification", "cavity", "spiculation", "lobulation", "normal"]


def test_make_tasks_and_relabel():
    tasks = make_tasks(NAMES, ["multiclass", "one_vs_rest", "cavity_vs_rest"])
    assert [t.name for t in tasks] == ["multiclass"] + [f"{c}_vs_rest" for c in NAMES[:5]], "no normal, no duplicate"
    cavity = tasks[3]
    assert cavity.class_names == ("rest", "cavity")
    items = [{"image": f"{i}.nii.gz", "label": i} for i in range(6)]
    assert [it["label"] for it in relabel(items, cavity)] == [0, 0, 1, 0, 0, 0]
    assert relabel(items, cavity)[2]["source_label"] == 2 and items[2]["label"] == 2, "copies, input untouched"
    assert relabel(items, tasks[0]) == items
    with pytest.raises(ValueError, match="unknown task 'tumour_vs_rest'"):
        make_tasks(NAMES, ["tumour_vs_rest"])


def _protocol(tmp_path, **kwargs) -> ClassificationProtocol:
    phantom = LungSignPhantom(n_per_class=(6,) * 6, image_size=16, seed=0)
    data = load_classification_dataset(tmp_path / "phantom", phantom=phantom, phantom_dir=tmp_path / "phantom")
    adam = partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
    gan = GANRecipe(
        partial(ACGANGenerator, latent_dim=8, image_size=16, channels=(16, 8), kernel_size=4, num_classes=6),
        partial(ACGANDiscriminator, image_size=16, channels=(8, 16), num_classes=6),
        adam,
        adam,
        ACGANObjective(),
    )
    classifier = ClassifierRecipe(
        partial(FridAdarCNN, num_classes=6, image_size=16, channels=(4, 8), hidden=8),
        partial(torch.optim.SGD, lr=0.01, momentum=0.9),
    )
    args = dict(
        gan_recipe=gan,
        classifier_recipe=classifier,
        transforms=roi_classification_transforms(-1000, 400),
        augmentation=ClassicAugmentation(seed=0),
        per_class_gan=False,
        arms=["real", "pretrain_synthetic+finetune"],
        tasks=["multiclass", "calcification_vs_rest", "cavity_vs_rest"],
        folds=2,
        gan_epochs=1,
        gan_batch_size=8,
        classifier_epochs=2,
        classifier_batch_size=8,
        n_synthetic_per_class=3,
        finetune_epochs=1,
        finetune_lr_scale=0.1,
        a_min=-1000,
        a_max=400,
        audit=False,
        paper_reference={"tasks": {"binary_mean": {"pretrain_synthetic+finetune": {"accuracy": 0.95}}}},
    )
    args.update(kwargs)
    return ClassificationProtocol(data, str(tmp_path / "eval"), **args)


def test_tasks_and_pretraining_end_to_end(tmp_path, monkeypatch):
    protocol = _protocol(tmp_path)
    report = protocol.run()
    assert report["primary_task"] == "multiclass" and set(report["arms"]) == {"real", "pretrain_synthetic+finetune"}
    tasks = report["tasks"]
    assert set(tasks) == {"multiclass", "calcification_vs_rest", "cavity_vs_rest", "binary_mean"}
    assert tasks["cavity_vs_rest"]["class_names"] == ["rest", "cavity"]
    assert tasks["binary_mean"]["paper_reference"] == {"pretrain_synthetic+finetune": {"accuracy": 0.95}}
    for name in ("calcification_vs_rest", "cavity_vs_rest"):
        fold = tasks[name]["arms"]["real"]["per_fold"][0]
        assert len(fold["confusion_matrix"]) == 2, "binary task: a 2-class classifier"
    assert report["arms"] == tasks["multiclass"]["arms"]
    out = tmp_path / "eval"
    # The fine-tuning started from the synthetic_only model of the same fold and task, trained although that arm
    # was not listed, with the learning rate scaled.
    task = protocol.tasks[2]
    pretrained = out / "fold1" / "tasks" / "cavity_vs_rest" / "arms" / "synthetic_only" / "best_model.pt"
    assert pretrained.is_file()
    recipe = protocol.runner.pretrained_recipe(1, [], [], [], [], task)
    net = recipe.network()
    saved = torch.load(pretrained, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    assert recipe.optimizer(net.parameters()).param_groups[0]["lr"] == pytest.approx(0.001)
    assert "Per task" in (out / "report.md").read_text()

    # Resume: a finished evaluation trains nothing again; a deleted arm result is redone, alone.
    calls = []
    real_fit = fold_runner.fit_classifier
    monkeypatch.setattr(fold_runner, "fit_classifier", lambda *a, **k: calls.append(a[5]) or real_fit(*a, **k))
    _protocol(tmp_path).run()
    assert calls == []
    (out / "fold0" / "tasks" / "multiclass" / "arms" / "real" / "result.json").unlink()
    again = _protocol(tmp_path).run()
    assert len(calls) == 1 and calls[0].endswith("fold0/tasks/multiclass/arms/real")
    assert json.dumps(again["tasks"]["cavity_vs_rest"]) == json.dumps(report["tasks"]["cavity_vs_rest"])


def test_equal_steps_gives_bigger_arms_fewer_epochs(tmp_path, monkeypatch):
    from common.protocol.budget import equal_step_epochs

    assert equal_step_epochs(30, 100, 300) == 10 and equal_step_epochs(30, 100, 100) == 30
    assert equal_step_epochs(3, 10, 1000) == 1, "never zero epochs"
    with pytest.raises(ValueError, match="n_reference"):
        equal_step_epochs(3, 0, 10)

    class Recorded(Exception):
        pass

    def record(*args, **kwargs):
        raise Recorded(kwargs["max_epochs"], len(args[1]))

    monkeypatch.setattr(fold_runner, "fit_classifier", record)
    item = {"image": "x", "label": 0}
    train, synthetic = [item] * 12, [item] * 24
    for equal, arm, expected in [
        ("real", "real", (6, 12)),
        (True, "real+synthetic", (2, 36)),  # true: the first arm ("real"); 3x its images, 1/3 of the epochs
        ("real", "synthetic_only", (3, 24)),
        (None, "real+synthetic", (6, 36)),  # the papers' way: same epochs, 3x the steps
    ]:
        protocol = _protocol(tmp_path / f"{equal}", classifier_epochs=6, equal_steps=equal, tasks=None)
        with pytest.raises(Recorded) as got:
            protocol.runner.run_arm(0, arm, train, [item], [item], synthetic)
        assert got.value.args == expected, (equal, arm)
    # the budget of the classic arm (2 augmented repeats of each real image): the baseline gets twice its epochs
    for arm, expected in [("classic", (6, 24)), ("baseline", (12, 12)), ("classic+synthetic", (3, 48))]:
        protocol = _protocol(
            tmp_path / "rep", classifier_epochs=6, equal_steps="classic", augment_repeats=2, tasks=None
        )
        with pytest.raises(Recorded) as got:
            protocol.runner.run_arm(0, arm, train, [item], [item], synthetic)
        assert got.value.args == expected, (equal, arm)
    with pytest.raises(ValueError, match="equal_steps"):
        _protocol(tmp_path / "bad", equal_steps="longest")
