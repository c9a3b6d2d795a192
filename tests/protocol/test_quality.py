"""The end of a training run: a patient-separated held-out part, the quality audit and line, one model file."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import CheckpointLoader
from monai.transforms import Compose, Lambdad

from common.engines import GANRecipe, fit_gans
from common.engines.model_file import MODEL_INFO_KEY, build_generators, read_model_info, write_model_file
from common.errors import DataError
from common.losses import ACGANObjective, BCEObjective
from common.networks import DCGANDiscriminator, DCGANGenerator
from common.protocol.quality import GeneratorQuality, finish_training, holdout_split, quality_line, summarise_audit


def _items(n=60, classes=2, per_patient=2):
    return [{"image": f"img{i}.nii", "label": i % classes, "patient": f"p{i // per_patient}"} for i in range(n)]


def test_holdout_split_keeps_patients_apart_and_is_saved(tmp_path):
    items = _items()
    path = tmp_path / "split.json"
    split = holdout_split(items, 0.2, seed=0, path=path)
    train_p = {it["patient"] for it in split["train"]}
    held_p = {it["patient"] for it in split["holdout"]}
    assert not train_p & held_p and len(split["train"]) + len(split["holdout"]) == len(items)
    assert 0.1 <= len(split["holdout"]) / len(items) <= 0.3
    assert {it["label"] for it in split["holdout"]} == {0, 1}, "stratified by class"
    # reused as saved (a resumed run), refused for other data (it would leak held-out images into training)
    assert holdout_split(items, 0.2, seed=0, path=path) == split
    with pytest.raises(DataError, match="other data or settings"):
        holdout_split(items[:-2], 0.2, seed=0, path=path)
    assert holdout_split(items, 0.0, seed=0)["holdout"] == []
    with pytest.raises(DataError, match="quality_holdout"):
        holdout_split(items, 1.0, seed=0)


def test_summary_and_line_put_every_number_beside_its_real_baseline():
    synthesis = {
        "precision_randcnn": 0.5, "precision_randcnn_real_baseline": 0.9, "recall_randcnn": 0.4,
        "recall_randcnn_real_baseline": 0.8, "coverage_randcnn": 0.3, "coverage_randcnn_real_baseline": 0.85,
        "density_randcnn": 0.6, "density_randcnn_real_baseline": 1.0, "frechet_distance_randcnn": 30.0,
        "frechet_distance_randcnn_real_baseline": 10.0,
    }  # fmt: skip
    summary = summarise_audit(synthesis)
    assert summary["frechet_ratio"] == pytest.approx(3.0) and summary["coverage_real_baseline"] == 0.85
    line = quality_line(summary)
    assert line.startswith("quality: precision 0.50 (real 0.90)") and "Frechet 3.00x real-vs-real" in line


def _recipe(conditional):
    k = 2 if conditional else 0
    return GANRecipe(
        generator=partial(DCGANGenerator, latent_dim=8, image_size=16, channels=(16, 8), num_classes=k),
        discriminator=partial(DCGANDiscriminator, image_size=16, channels=(8, 16), num_classes=k),
        g_optimizer=partial(torch.optim.Adam, lr=2e-4),
        d_optimizer=partial(torch.optim.Adam, lr=2e-4),
        objective=ACGANObjective() if conditional else BCEObjective(),
    )


@pytest.mark.parametrize("conditional", [False, True])
def test_finish_training_audits_and_writes_one_model_file(tmp_path, conditional, capsys):
    g = torch.Generator().manual_seed(0)
    images = {f"img{i}": torch.rand(1, 16, 16, generator=g) * 2 - 1 for i in range(60)}
    items = [{"image": k, "label": i % 2, "patient": f"p{i}"} for i, k in enumerate(images)]
    load = Compose([Lambdad("image", lambda k: images[k])])
    split = holdout_split(items, 0.25, seed=0)
    names = ["cyst", "metastasis"]
    recipe = _recipe(conditional)
    fit_gans(
        recipe, split["train"], load, str(tmp_path / "gan"), class_names=names, per_class=not conditional,
        max_epochs=1, batch_size=8, tensorboard=False, progress=False,
    )  # fmt: skip
    info = finish_training(
        recipe, tmp_path / "gan", names, tmp_path / "model.pt", split, load,
        GeneratorQuality(tmp_path, n_seeds=1, n_resamples=0), model_info={"image_size": 16},
    )  # fmt: skip
    assert capsys.readouterr().out.count("quality: precision ") == 1
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert quality["n_heldout"] == len(split["holdout"]) and quality["n_synthetic"] == len(split["holdout"])
    for m in ("precision", "recall", "coverage"):
        assert 0 <= quality[m] <= 1 and 0 <= quality[f"{m}_real_baseline"] <= 1
        assert quality["targets"][m]["met"] == (quality[m] >= quality["targets"][m]["target"])
    assert (tmp_path / "quality_audit" / "nearest_pairs.png").is_file()
    assert info["training"]["iterations"] > 0 and info["quality"]["coverage"] == quality["coverage"]

    # the model file: the sizes and names travel with the weights; MONAI's CheckpointLoader loads every generator
    saved = read_model_info(tmp_path / "model.pt")
    assert saved["class_names"] == names and saved["image_size"] == 16
    gens = build_generators(recipe, names)
    assert sorted(gens) == (["conditional"] if conditional else names)
    CheckpointLoader(str(tmp_path / "model.pt"), load_dict=gens, strict=True)(Engine(lambda e, b: None))
    for name, gen in gens.items():
        ref = torch.load(tmp_path / "gan" / name / "generator.pt", weights_only=True)
        assert all(torch.equal(gen.state_dict()[k], v) for k, v in ref.items())


def test_model_file_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no model file at .*missing.pt.*--model_file"):
        read_model_info(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt' is not a readable model file"):
        read_model_info(tmp_path / "junk.pt")
    torch.save({"generator": {}}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="not a synthaug model file"):
        read_model_info(tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="reserved"):
        write_model_file({MODEL_INFO_KEY: torch.nn.Linear(1, 1)}, tmp_path / "x.pt")
