"""The audit end to end: a copying generator is caught, a fresh one is not; CLI, config form and classifier loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.audit import SynthesisAudit, load_classifier, load_image_set, main, run_audit
from common.audit.files import _normalise_sets
from common.errors import DataError
from common.metrics.features import RandomCNNFeatures


def phantoms(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """A procedural "generator": 1-3 bright ellipses on a sloped dark background, noise; ``(n, 1, size, size)``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = np.empty((n, 1, size, size), np.float32)
    for i in range(n):
        img = -0.8 + 0.3 * (rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy)
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(0.2, 0.8, 2)
            rx, ry = rng.uniform(0.1, 0.35, 2)
            img[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1] += rng.uniform(0.4, 1.2)
        out[i, 0] = np.clip(img + 0.03 * rng.normal(size=img.shape), -1, 1)
    return torch.from_numpy(out)


def noisy_copies(train: torch.Tensor, n: int, seed: int, noise: float = 0.05) -> torch.Tensor:
    """A memorising "generator": random training images plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(train), (n,), generator=gen)
    return (train[idx] + noise * torch.randn(n, *train.shape[1:], generator=gen)).clamp(-1, 1)


FAST = {"n_resamples": 200, "kid_subsets": 20, "n_pairs": 100}


@pytest.fixture(scope="module")
def sets():
    train, real = phantoms(80, seed=1), phantoms(80, seed=2)
    return train, real, phantoms(80, seed=3), noisy_copies(train, 80, seed=4)


def test_copying_generator_is_caught_and_a_fresh_one_is_not(sets):
    train, real, fresh, copies = sets
    small_nets = RandomCNNFeatures(seeds=(0, 1, 2), channels=(4, 8, 16), device="cpu")
    bad_section = run_audit(train, real, copies, features=[small_nets], **FAST)["privacy"]
    good_section = run_audit(train, real, fresh, features=[small_nets], **FAST)["privacy"]
    bad, good = bad_section["details"], good_section["details"]
    assert bad_section["mia_auc_pixel"] == bad["mia_auc_pixel"]["value"]  # headline = detailed value

    assert bad["copy_fraction_pixel"]["value"] > 0.5
    assert bad["copy_fraction_fixed_pixel"]["value"] > 0.5
    assert bad["mia_auc_pixel"]["value"] > 0.6 and bad["mia_auc_pixel"]["ci95"][0] > 0.5
    assert bad["authenticity_pixel"]["value"] < 0.2 < bad["authenticity_pixel"]["real_baseline"]
    assert bad["dcr_median_ratio_pixel"]["value"] < 0.5
    assert bad["mia_auc_randcnn"]["value"] > 0.6 and len(bad["mia_auc_randcnn"]["per_seed"]) == 3
    assert bad_section["memorization_suspected"] and any("mia_auc" in f for f in bad_section["flags"])

    assert not good_section["memorization_suspected"], good_section["flags"]
    assert good["copy_fraction_pixel"]["value"] < 0.15
    assert good["copy_fraction_fixed_pixel"]["value"] == 0.0
    assert 0.4 < good["mia_auc_pixel"]["value"] < 0.6
    assert 0.7 < good["dcr_median_ratio_pixel"]["value"] < 1.3
    assert abs(good["authenticity_pixel"]["value"] - good["authenticity_pixel"]["real_baseline"]) < 0.15


def test_synthesis_section_reads_against_its_real_baseline(sets):
    train, real, fresh, _ = sets
    blank = torch.full_like(fresh, -0.8) + 0.01 * torch.randn_like(fresh)  # a collapsed, featureless generator
    small_nets = RandomCNNFeatures(seeds=(0, 1), channels=(4, 8, 16), device="cpu")
    good_section = run_audit(train, real, fresh, features=[small_nets], **FAST)["synthesis"]
    bad = run_audit(train, real, blank, features=[small_nets], **FAST)["synthesis"]["details"]
    good = good_section["details"]
    for key in ("frechet_distance_randcnn", "kid_randcnn", "precision_randcnn", "coverage_randcnn"):
        assert {"value", "real_baseline", "per_seed", "real_baseline_per_seed"} <= set(good[key])
        assert good_section[f"{key}_real_baseline"] == good[key]["real_baseline"]
    assert good_section["setup"]["n_compared"] == 80
    assert bad["frechet_distance_randcnn"]["value"] > 3 * bad["frechet_distance_randcnn"]["real_baseline"]
    assert good["frechet_distance_randcnn"]["value"] < 2 * good["frechet_distance_randcnn"]["real_baseline"]
    assert bad["coverage_randcnn"]["value"] < 0.2 < good["coverage_randcnn"]["value"]
    assert bad["ms_ssim_diversity"]["value"] > good["ms_ssim_diversity"]["real_baseline"]


def test_run_audit_rejects_bad_input(sets):
    train, real, fresh, _ = sets
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        run_audit(train * 3, real, fresh, features=[])
    with pytest.raises(DataError, match="same"):
        run_audit(train, real[..., :8], fresh, features=[])
    with pytest.raises(ValueError, match="classifier"):
        run_audit(train, real, fresh, features="classifier")


def _write_pngs(folder, images: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        pixels = np.round((img[0].numpy() + 1) * 127.5).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img_{i:03d}.png")


def test_cli_on_folders_and_a_datalist_writes_audit_json_and_figures(tmp_path, sets):
    train, real, fresh, _ = sets
    _write_pngs(tmp_path / "train" / "nested", train[:30])
    _write_pngs(tmp_path / "real", real[:30])
    _write_pngs(tmp_path / "syn", fresh[:30])
    items = [{"image": f"syn/img_{i:03d}.png", "label": 0} for i in range(30)]
    (tmp_path / "syn.json").write_text(json.dumps({"training": items}))
    out = tmp_path / "audit"
    result = main(
        [
            "--train",
            str(tmp_path / "train"),
            "--real",
            str(tmp_path / "real"),
            "--synthetic",
            str(tmp_path / "syn.json"),
        ]
        + ["--out", str(out), "--max_images", "25", "--n_resamples", "50"]
    )
    saved = json.loads((out / "audit.json").read_text())
    assert set(saved) == {"synthesis", "privacy"} and saved == json.loads(json.dumps(result))
    assert saved["synthesis"]["setup"]["n_train"] == 25 and saved["synthesis"]["setup"]["intensity"].startswith("uint8")
    assert "frechet_distance_randcnn" in saved["synthesis"] and "mia_auc_pixel" in saved["privacy"]
    assert not any("fid" in key.lower() for key in saved["synthesis"])
    for name in ("nearest_pairs.png", "feature_pca.png", "nn_distance_hist.png", "distances.npz"):
        assert (out / name).is_file(), name
    assert Image.open(out / "nearest_pairs.png").size[0] > 100


def test_bundle_config_form(tmp_path, sets):
    from monai.bundle import ConfigParser

    train, real, fresh, _ = sets
    parser = ConfigParser(
        {"audit": {"_target_": "common.audit.SynthesisAudit", "out_dir": str(tmp_path), "features": [], **FAST}}
    )
    audit = parser.get_parsed_content("audit")
    assert isinstance(audit, SynthesisAudit)
    result = audit(train[:20], real[:20], fresh[:20])
    assert (tmp_path / "audit.json").is_file() and "copy_fraction_pixel" in result["privacy"]
    assert "ms_ssim_diversity" in result["synthesis"]


def test_classifier_feature_space_from_a_checkpoint(tmp_path, sets):
    from monai.networks.nets import Classifier

    train, real, fresh, _ = sets
    definition = {
        "_target_": "monai.networks.nets.Classifier",
        "in_shape": [1, 16, 16],
        "classes": 2,
        "channels": [4, 8],
        "strides": [2, 2],
    }
    torch.manual_seed(0)
    net = Classifier(in_shape=(1, 16, 16), classes=2, channels=(4, 8), strides=(2, 2)).eval()
    # As Ignite's CheckpointSaver and DataParallel leave it: weights nested under "model", keys prefixed "module.".
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "ckpt.pt")
    loaded = load_classifier(tmp_path / "ckpt.pt", json.dumps(definition))
    with torch.no_grad():
        assert torch.allclose(loaded(train[:2]), net(train[:2]))
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    with torch.no_grad():
        assert torch.allclose(load_classifier(tmp_path / "net.ts")(train[:2]), net(train[:2]))

    result = run_audit(train[:30], real[:30], fresh[:30], features="classifier", classifier=loaded, **FAST)
    assert "frechet_distance_classifier" in result["synthesis"] and "mia_auc_classifier" in result["privacy"]
    assert "per_seed" not in result["synthesis"]["details"]["frechet_distance_classifier"]  # one replicate only

    # The same from the command line: a bundle-style config file holding "network_def", no figures, no bootstrap.
    (tmp_path / "net.json").write_text(json.dumps({"network_def": definition}))
    for name, images in (("t", train[:20]), ("r", real[:20]), ("s", fresh[:20])):
        _write_pngs(tmp_path / name, images)
    folders = ["--train", str(tmp_path / "t"), "--real", str(tmp_path / "r"), "--synthetic", str(tmp_path / "s")]
    cli = main(
        folders
        + ["--out", str(tmp_path / "cli"), "--features", "classifier", "--classifier", str(tmp_path / "ckpt.pt")]
        + ["--classifier_def", str(tmp_path / "net.json"), "--no_figures", "--n_resamples", "0"]
    )
    assert cli["synthesis"]["setup"]["feature_spaces"] == ["classifier"]
    assert cli["privacy"]["details"]["mia_auc_classifier"]["ci95"] == [None, None]
    assert not (tmp_path / "cli" / "nearest_pairs.png").exists()


def test_loading_converts_channels_and_size_and_reads_datalist_sections(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "rgb").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)).save(tmp_path / "rgb" / f"{i}.png")
    arrays, paths = load_image_set(tmp_path / "rgb", shape=(1, 12, 10))
    assert len(paths) == 3 and all(a.shape == (1, 12, 10) for a in arrays)
    assert len(load_image_set(tmp_path / "rgb", max_images=2)[0]) == 2
    items = [{"image": f"rgb/{i}.png"} for i in range(3)]
    (tmp_path / "dl.json").write_text(json.dumps({"training": items[:1], "validation": items[1:]}))
    assert len(load_image_set(f"{tmp_path / 'dl.json'}#validation")[1]) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_image_set(tmp_path / "empty")
    with pytest.raises(DataError, match="neither a folder nor a datalist"):
        load_image_set(tmp_path / "missing")


def test_intensity_mapping_is_shared_by_the_three_sets():
    eight_bit = [np.array([[0.0, 255.0]]), np.array([[127.5 + 0.5]])]
    out, info = _normalise_sets(eight_bit, "auto")
    assert info["intensity"].startswith("uint8") and out[0].tolist() == [[-1.0, 1.0]]
    hu = [np.linspace(-1000, 1000, 1001), np.array([0.0, 5000.0])]  # CT-like: train percentiles, then clipped
    out, info = _normalise_sets(hu, "auto")
    assert info["intensity"].startswith("train percentiles")
    assert out[1][0] == pytest.approx(0.0, abs=1e-9) and out[1][1] == 1.0


def test_audit_datalists_with_monai_transforms_as_the_protocol_calls_it(tmp_path, sets):
    from monai.transforms import Compose, LoadImaged, ScaleIntensityRanged

    from common.audit import audit_datalists

    train, real, fresh, _ = sets
    for name, images in (("t", train[:20]), ("r", real[:20]), ("s", fresh[:20])):
        _write_pngs(tmp_path / name, images)
    items = {n: [{"image": str(p), "label": 0} for p in sorted((tmp_path / n).glob("*.png"))] for n in "trs"}
    transforms = Compose(
        [
            LoadImaged(keys="image", ensure_channel_first=True, image_only=True),
            ScaleIntensityRanged(keys="image", a_min=0, a_max=255, b_min=-1.0, b_max=1.0, clip=True),
        ]
    )
    result = audit_datalists(
        items["t"], items["r"], items["s"], tmp_path / "out", transforms=transforms, features=[], figures=False, **FAST
    )
    assert result["synthesis"]["setup"]["intensity"] == "the given transforms"
    assert result["privacy"]["setup"]["n_train"] == 20 and (tmp_path / "out" / "audit.json").is_file()
    assert not result["privacy"]["memorization_suspected"]
