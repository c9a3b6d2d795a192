"""Paired image-to-image GANs (pix2pix) on prepared brain cases: training, sample grids, synthetic cases.

``pix2pix_trainer`` builds the shared ``gan_trainer`` engine (the same checkpoints, resume, NaN guard, logs; a
bundle's ``train#trainer``) and ``fit_pix2pix`` runs it, on axial slices (``spatial_dims=2``) or whole prepared
volumes (``spatial_dims=3``). ``synthesise_cases`` edits label maps of training cases
(``common.data.brain_transforms``) and lets the generator draw their images; the result is a case set in the
prepared format, so the segmentation protocol reads synthetic cases exactly like real ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.inferers import SliceInferer
from monai.transforms import Compose, EnsureTyped, LoadImaged, RandSpatialCropd
from torch import nn

from common.data.brain import BRAIN_PATH_KEYS, slice_items
from common.data.brain_transforms import BrainConditiond, SelectSliced, brain_condition
from common.data.datalist import write_datalist
from common.data.io import read_image, write_image
from common.engines.gan_engine import GANTrainer
from common.engines.gan_training import GANRecipe, gan_trainer
from common.engines.memory_format import plain_tensor, to_channels_last
from common.errors import DataError
from common.viz import image_grid, save_png

logger = logging.getLogger(__name__)

__all__ = [
    "PairedSampleGridSaver",
    "fit_pix2pix",
    "paired_transforms",
    "pix2pix_trainer",
    "prepare_paired_batch",
    "synthesise_cases",
    "translate_volume",
]

CASE_KEYS = ("image", "label", "brain", "anatomy")


def paired_transforms(
    spatial_dims: int, use_anatomy: bool, keys: Sequence[str] = CASE_KEYS, crop_size: Sequence[int] | None = None
) -> Compose:
    """Prepared case (or slice item with ``z``) -> ``image`` (C, *spatial), ``condition`` (K, *spatial), ``label``.

    ``crop_size`` (3-D): train on random crops of this size instead of whole volumes (Shin et al.'s 3-D crops; the
    fully convolutional generator then synthesises whole volumes at inference).
    """
    keys = [k for k in keys if use_anatomy or k != "anatomy"]
    steps = [LoadImaged(keys, ensure_channel_first=True, image_only=True, allow_missing_keys=True)]
    if spatial_dims == 2:
        steps.append(SelectSliced(keys))
    elif crop_size:
        steps.append(RandSpatialCropd(keys, roi_size=list(crop_size), random_size=False, allow_missing_keys=True))
    steps += [BrainConditiond(use_anatomy=use_anatomy), EnsureTyped([*keys, "condition"], track_meta=False)]
    return Compose(steps)


def prepare_paired_batch(batch: dict, device, non_blocking: bool = False, flip: bool = False, **kwargs):
    """(reals, condition) on ``device``; ``flip``: the same random left-right flip for both (per batch)."""
    reals = plain_tensor(batch["image"]).to(device=device, non_blocking=non_blocking).float()
    cond = plain_tensor(batch["condition"]).to(device=device, non_blocking=non_blocking).float()
    if flip and torch.rand(()) < 0.5:
        reals, cond = reals.flip(2), cond.flip(2)
    return to_channels_last(reals), to_channels_last(cond)


class PairedSampleGridSaver:
    """Every ``interval`` epochs, a PNG of fixed examples: label map | synthetic | real, one row per example.

    The label map is shown as its class index (brightness), the MRI as each sequence side by side.
    """

    def __init__(self, output_dir: str, examples: dict, interval: int = 1) -> None:
        self.output_dir = Path(output_dir)
        self.condition, self.image = examples["condition"], examples["image"]
        self.interval = max(1, int(interval))

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine) -> None:
        gen = engine.sampling_generator()
        was = gen.training
        gen.eval()
        fake = gen(to_channels_last(self.condition.to(engine.state.device))).float().cpu()
        gen.train(was)
        save_png(
            self.output_dir / f"samples_epoch_{engine.state.epoch:04d}.png",
            paired_grid(self.condition, fake, self.image),
        )


def _mid_slice(x: torch.Tensor) -> torch.Tensor:
    return x[..., x.shape[-1] // 2] if x.ndim == 5 else x


def paired_grid(condition: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> np.ndarray:
    """Rows of [label map | synthetic sequences | real sequences] (3-D: the middle axial slice)."""
    condition, fake, real = (_mid_slice(t.float().cpu()) for t in (condition, fake, real))
    k = condition.shape[1]
    index = (condition * torch.arange(1, k + 1).view(1, k, 1, 1)).amax(1, keepdim=True)
    label_img = index / k * 2 - 1  # class index -> [-1, 1] brightness
    tiles = []
    for i in range(condition.shape[0]):
        tiles.append(label_img[i : i + 1])
        tiles += [fake[i : i + 1, c : c + 1] for c in range(fake.shape[1])]
        tiles += [real[i : i + 1, c : c + 1] for c in range(real.shape[1])]
    return image_grid(torch.cat(tiles), nrow=1 + fake.shape[1] + real.shape[1])


def pix2pix_items(cases: Sequence[dict], spatial_dims: int = 2) -> list[dict]:
    """The items a pix2pix GAN trains on: one per axial slice with brain in 2-D, one per case (volume) in 3-D."""
    cases = list(cases)
    if spatial_dims == 2:
        return slice_items(cases)
    return [{k: c[k] for k in (*CASE_KEYS, "case_id") if c.get(k)} for c in cases]


def pix2pix_keys(spatial_dims: int = 2) -> list[str]:
    """The item keys ``paired_transforms`` reads (a loader drops the rest: ``gan_dataloader``'s ``keys``)."""
    return [*CASE_KEYS, "z"] if spatial_dims == 2 else list(CASE_KEYS)


def pix2pix_trainer(
    recipe: GANRecipe,
    cases: Sequence[dict],
    output_dir: str,
    *,
    spatial_dims: int = 2,
    use_anatomy: bool = False,
    max_epochs: int,
    batch_size: int | None = None,
    flip: bool = True,
    n_examples: int = 4,
    crop_size: Sequence[int] | None = None,
    sample_interval: int = 1,
    transforms: Compose | None = None,
    **trainer_kwargs,
) -> GANTrainer:
    """The Ignite engine (``gan_trainer``'s ``GANTrainer``) that trains a pix2pix ``recipe`` on prepared ``cases``:
    axial slices in 2-D, whole volumes (or random ``crop_size`` crops) in 3-D (``pix2pix_items``); a paired batch
    (``prepare_paired_batch``, the same random left-right ``flip`` for image and label map); sample grids of fixed
    tumour slices (3-D: the middle slice) of the first ``n_examples`` cases. ``transforms``: the
    ``paired_transforms`` the loader applies (a bundle passes its ``train#preprocessing``, the object its
    ``train#dataloader`` uses, so that the run seeds the transforms the loader runs); None makes them here.
    ``trainer_kwargs``: ``gan_trainer``'s (device, seed, resume, ``train_handlers``, ``total_steps``,
    ``train_data_loader``...). ``.run()`` it; ``fit_pix2pix`` does."""
    cases = list(cases)
    if not cases:
        raise DataError(f"no training cases for pix2pix (output_dir={output_dir})")
    if transforms is None:
        transforms = paired_transforms(spatial_dims, use_anatomy, crop_size=crop_size)
    # fixed examples for the sample grids: slices through the tumour of the first cases
    picks = []
    for case in cases[:n_examples]:
        if spatial_dims == 2:
            lab = read_image(case["label"])[0]
            z = int(np.argmax((lab > 0).reshape(-1, lab.shape[-1]).sum(0)))
            picks.append({**{k: case[k] for k in CASE_KEYS if case.get(k)}, "z": z})
        else:
            picks.append({k: case[k] for k in CASE_KEYS if case.get(k)})
    ex = [paired_transforms(spatial_dims, use_anatomy)(p) for p in picks]  # whole slices/volumes, not crops
    examples = {k: torch.stack([plain_tensor(e[k]).float() for e in ex]) for k in ("condition", "image")}
    saver = PairedSampleGridSaver(output_dir, examples, interval=sample_interval)
    return gan_trainer(
        recipe,
        pix2pix_items(cases, spatial_dims),
        transforms,
        output_dir,
        max_epochs=max_epochs,
        batch_size=batch_size,
        prepare_batch=partial(prepare_paired_batch, flip=flip),
        sample_saver=saver,
        dataset_keys=pix2pix_keys(spatial_dims),
        **trainer_kwargs,
    )


def fit_pix2pix(
    recipe: GANRecipe, cases: Sequence[dict], output_dir: str, *, extra_handlers: Sequence | None = None, **kwargs
) -> dict:
    """Train a pix2pix ``recipe`` on prepared ``cases``: build ``pix2pix_trainer`` (which documents the arguments),
    run it, return ``fit_gan``'s result dict (``engine.state.result``)."""
    trainer = pix2pix_trainer(recipe, cases, output_dir, train_handlers=extra_handlers, **kwargs)
    trainer.run()
    return trainer.state.result


def load_generator(recipe: GANRecipe, gan_dir: str, device="cpu") -> nn.Module:
    path = Path(gan_dir) / "generator.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained generator at '{path}': run the bundle's 'training' first or set 'gan_dir'")
    gen = recipe.generator()
    gen.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return to_channels_last(gen.to(device)).eval()


@torch.no_grad()
def translate_volume(
    generator: nn.Module,
    label: np.ndarray,
    brain: np.ndarray,
    anatomy: np.ndarray | None,
    *,
    spatial_dims: int = 2,
    batch_size: int = 16,
    device="cpu",
    dropout: bool = True,
    inferer: Callable | None = None,
) -> np.ndarray:
    """Synthesise an image volume (C, H, W, D) in [-1, 1] for a label map (1, H, W, D); -1 outside the brain.

    2-D generators draw slice by slice. ``dropout``: keep pix2pix's dropout on at inference, as Isola et al. do
    (it is the generator's only noise source, so synthetic cases of one label map differ).
    """
    cond = brain_condition(label, brain, anatomy)  # (K, H, W, D)
    generator.eval()
    if dropout:
        for m in generator.modules():
            if isinstance(m, nn.Dropout | nn.Dropout2d | nn.Dropout3d):
                m.train()
    x = torch.as_tensor(cond)[None].to(device)  # (1, K, H, W, D)
    if spatial_dims == 3:
        out = generator(to_channels_last(x))
    else:  # MONAI's SliceInferer runs the 2-D generator on every axial slice and stacks the results
        inferer = inferer or SliceInferer(roi_size=tuple(x.shape[2:4]), sw_batch_size=batch_size, spatial_dim=2)
        out = inferer(x, generator)
    out = out[0].float().cpu().numpy()
    out = np.clip(out, -1.0, 1.0)
    out[:, brain[0] <= 0] = -1.0
    return out.astype(np.float32)


def synthesise_cases(
    generator: nn.Module,
    cases: Sequence[dict],
    n_cases: int,
    out_dir: str,
    *,
    sequences: Sequence[str],
    edit: Callable[[dict], dict] | None = None,
    paste_fraction: float = 0.5,
    spatial_dims: int = 2,
    use_anatomy: bool = False,
    seed: int = 0,
    device="cpu",
    min_brain_fraction: float = 0.05,
    inferer: Callable | None = None,
) -> str:
    """Write ``n_cases`` synthetic cases (image + its edited label map) made from the label maps of ``cases``.

    Case k edits the label map of ``cases[k % n]``: with probability ``paste_fraction`` its tumour is replaced by
    that of another case (``PasteTumourd``), then ``edit`` (e.g. ``Compose([RandTumourAffined(),
    RandTumourCompositiond()])``) moves / resizes / re-composes it. Returns the datalist path. Already written
    cases are kept (a killed run resumes).
    """
    from common.data.brain_transforms import PasteTumourd

    cases = list(cases)
    if not cases:
        raise DataError("no cases to take label maps from")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    if hasattr(edit, "set_random_state"):
        edit.set_random_state(seed)
    paste = PasteTumourd()
    items = []
    for k in range(n_cases):
        recipient = cases[k % len(cases)]
        donor_index = int(rng.integers(len(cases)))
        do_paste = len(cases) > 1 and rng.random() < paste_fraction and donor_index != k % len(cases)
        torch.manual_seed(seed * 100003 + k)  # dropout noise of this case
        cid = f"synthetic{k:04d}"
        folder = out / cid
        entry = {"case_id": cid, "patient": cid, "source_case": recipient["case_id"]}
        done = folder / "done.json"
        d = {
            key: read_image(recipient[key]).astype(np.int16)
            for key in ("label", "brain", "anatomy")
            if recipient.get(key)
        }
        if do_paste:
            donor = cases[donor_index]
            d["donor_label"] = read_image(donor["label"]).astype(np.int16)
            d["donor_brain"] = read_image(donor["brain"]).astype(np.int16)
            d = paste(d)
            entry["donor_case"] = donor["case_id"]
        if edit is not None:
            d = edit(d)
        if not done.is_file():
            label = np.asarray(d["label"]).astype(np.int16)
            brain = np.asarray(d["brain"]).astype(np.int16)
            anatomy = np.asarray(d["anatomy"]).astype(np.int16) if use_anatomy and "anatomy" in d else None
            image = translate_volume(
                generator, label, brain, anatomy, spatial_dims=spatial_dims, device=device, inferer=inferer
            )
            write_image(folder / "label.nii", label)
            write_image(folder / "brain.nii", brain)
            if anatomy is not None:
                write_image(folder / "anatomy.nii", anatomy)
            write_image(folder / "image.nii", image)
            done.write_text("{}\n")
        for key in CASE_KEYS:
            path = folder / f"{key}.nii"
            if path.is_file():
                entry[key] = str(path)
        area = (read_image(entry["brain"])[0] > 0).reshape(-1, np.asarray(d["brain"]).shape[-1]).mean(0)
        entry["slices"] = [int(z) for z in np.nonzero(area >= min_brain_fraction)[0]]
        items.append(entry)
    return write_datalist(
        out / "datalist.json",
        items,
        path_keys=BRAIN_PATH_KEYS,
        name="synthetic",
        sequences=list(sequences),
        source="synthetic",
    )


class CaseSynthesizer:
    """The inference step of the brain bundle: ``run()`` writes ``n_cases`` synthetic cases and returns the datalist.

    A thin object around :func:`synthesise_cases` so that ``inference.json`` names its parts (``dataset``: the
    cases whose label maps are edited, ``network``, ``inferer``) the way MONAI's infer workflow expects.
    """

    def __init__(self, network: nn.Module, dataset: dict, n_cases: int, out_dir: str, **kwargs) -> None:
        self.network, self.dataset, self.n_cases, self.out_dir, self.kwargs = network, dataset, n_cases, out_dir, kwargs
        self.datalist: str | None = None

    def run(self) -> str:
        self.datalist = synthesise_cases(
            self.network.eval(),
            self.dataset["items"],
            self.n_cases,
            self.out_dir,
            sequences=self.dataset["sequences"],
            **self.kwargs,
        )
        logger.info(f"{self.n_cases} synthetic cases written; datalist: {self.datalist}")
        return self.datalist


def load_weights(network: nn.Module, path: str, device="cpu") -> nn.Module:
    """``network`` with the weights at ``path``, on ``device``, in eval mode; a clear error when it is missing.

    ``path``: a state dict (``generator.pt``), a training checkpoint or a model file (``models/model.pt``): the
    latter two hold the generator under the key ``"generator"``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights at '{path}': run the bundle's 'training' first or set --model_file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state.get("generator"), dict):
        state = state["generator"]
    network.load_state_dict(state)
    return to_channels_last(network.to(device)).eval()
