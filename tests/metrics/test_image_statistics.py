"""Direct image statistics (MelanoGANs): histograms and their distances, mean/std images, lesion sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.data.phantoms import DermoscopyPhantom
from common.metrics.image_statistics import (
    colour_histograms,
    histogram_distances,
    image_statistics,
    lesion_area_fractions,
    otsu_threshold,
    write_image_statistics,
)


def _phantom(n: int, seed: int = 0, size: int = 48):
    gen = DermoscopyPhantom(n_per_class=(n, n, n), image_size=size, seed=seed).generate()
    samples = [next(gen) for _ in range(3 * n)]
    images = torch.tensor(np.stack([s["array"] for s in samples]) / 127.5 - 1.0, dtype=torch.float32)
    return images, np.array([s["lesion_area_fraction"] for s in samples])


def test_histogram_distances_are_zero_for_equal_and_grow_with_a_shift():
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    h = colour_histograms(x, bins=32)
    assert h.shape == (3, 32) and np.allclose(h.sum(1), 1.0)
    same = histogram_distances(h, h)
    assert all(v == pytest.approx(0.0, abs=1e-12) for key in same for v in same[key])
    near = histogram_distances(h, colour_histograms((x + 0.1).clamp(-1, 1), bins=32))
    far = histogram_distances(h, colour_histograms((x + 0.5).clamp(-1, 1), bins=32))
    for key in ("intersection", "js_divergence", "wasserstein_levels"):
        assert all(f > n > 0 for f, n in zip(far[key], near[key], strict=True)), key


def test_otsu_separates_two_modes():
    values = np.concatenate([np.full(100, 0.2), np.full(50, 0.8)])
    assert 0.2 <= otsu_threshold(values) < 0.8


def test_lesion_segmentation_follows_the_phantoms_true_lesion_area():
    images, truth = _phantom(10)
    measured = lesion_area_fractions(images)
    assert measured.shape == truth.shape
    assert np.corrcoef(measured, truth)[0, 1] > 0.8
    assert np.median(np.abs(measured - truth)) < 0.08
    assert lesion_area_fractions(torch.zeros(2, 3, 32, 32)).tolist() == [0.0, 0.0], "a flat image has no lesion"


def test_statistics_see_a_colour_cast_and_a_real_baseline_stays_close(tmp_path):
    real, _ = _phantom(8, seed=0)
    heldout, _ = _phantom(8, seed=1)
    tinted = real.clone()
    tinted[:, 2] = (tinted[:, 2] + 0.4).clamp(-1, 1)  # a bluish generator
    stats = write_image_statistics({"real": real, "heldout": heldout, "tinted": tinted}, tmp_path, reference="real")
    vs_held = stats["sets"]["heldout"]["vs_reference"]
    vs_tint = stats["sets"]["tinted"]["vs_reference"]
    assert vs_tint["histogram"]["wasserstein_levels"][2] > 3 * vs_held["histogram"]["wasserstein_levels"][2]
    assert vs_tint["histogram"]["wasserstein_levels"][0] == pytest.approx(0.0, abs=1e-9), "red is untouched"
    assert vs_tint["mean_image_mae_levels"] > vs_held["mean_image_mae_levels"]
    assert "vs_reference" not in stats["sets"]["real"]
    assert [row["set"] for row in stats["summary"]] == ["heldout", "tinted"]
    assert (tmp_path / "image_statistics.json").is_file()
    for figure in stats["figures"]:
        assert (tmp_path / figure).is_file()


def test_bad_sets_are_refused():
    with pytest.raises(ValueError, match="reference"):
        image_statistics({"a": torch.zeros(2, 3, 8, 8)}, reference="real")
    with pytest.raises(ValueError, match="channel"):
        image_statistics({"real": torch.zeros(2, 3, 8, 8), "g": torch.zeros(2, 1, 8, 8)})
    with pytest.raises(ValueError, match="NaN"):
        image_statistics({"real": torch.full((2, 3, 8, 8), float("nan"))})
