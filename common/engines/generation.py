"""Generator -> synthetic files + datalist, as an Ignite evaluator (the one place this arrow is drawn).

``inference.json`` wires these parts declaratively (``dataset`` of latents, ``inferer``, ``evaluator`` and its
``SyntheticSetWriter`` handler), as MONAI's ``infer`` workflow expects; the protocols call ``generate_synthetic_set``
which builds the same parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.engines import Evaluator
from monai.inferers import Inferer, SimpleInferer
from torch import nn

from common.data.synthetic import write_synthetic_set


class LatentDataset(torch.utils.data.Dataset):
    """``n_per_class`` latent codes for each class, fixed by ``seed``: items ``{"latent": (latent_dim,), "label"}``.

    Args:
        latent_sampler: ``(n, generator=torch.Generator) -> (n, latent_dim)``, e.g. a generator's ``sample_latent``,
            so that the codes follow the distribution G was trained with.
        n_per_class: one count for every class, or a sequence of ``num_classes`` counts (e.g. only as many
            synthetic images per class as balance the real set; 0 for a class without a generator).
    """

    def __init__(
        self, latent_sampler: Callable, n_per_class: int | Sequence[int], num_classes: int = 1, seed: int = 0
    ) -> None:
        rng = torch.Generator(device="cpu").manual_seed(seed)
        if isinstance(n_per_class, (int, float)):
            counts = [int(n_per_class)] * int(num_classes)
        else:
            counts = [int(c) for c in n_per_class]
            if len(counts) != int(num_classes):
                raise ValueError(f"n_per_class has {len(counts)} counts for {num_classes} classes")
        n = sum(counts)
        self.latents = latent_sampler(n, device="cpu", generator=rng) if n else torch.empty(0)
        self.labels = torch.arange(len(counts)).repeat_interleave(torch.as_tensor(counts, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"latent": self.latents[i], "label": self.labels[i]}


class GeneratorEvaluator(Evaluator):
    """Run generator(s) over a loader of latents; ``engine.state.output`` is ``{"pred": images, "label": labels}``.

    Args:
        generators: ``{"conditional": G}`` for one class-conditional G (called ``G(z, labels)``), or one
            unconditional G per class name (Frid-Adar's DCGAN-per-class), each called ``G(z)``.
        class_names: label order.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader,
        generators: dict[str, nn.Module],
        class_names: Sequence[str],
        inferer: Inferer | None = None,
        val_handlers: Sequence | None = None,
    ) -> None:
        super().__init__(device=device, val_data_loader=val_data_loader, val_handlers=val_handlers, decollate=False)
        self.generators = {k: g.to(device).eval() for k, g in generators.items()}
        self.class_names = list(class_names)
        self.inferer = inferer or SimpleInferer()
        missing = [c for c in self.class_names if c not in self.generators] if "conditional" not in generators else []
        labels = getattr(getattr(val_data_loader, "dataset", None), "labels", None)
        if missing and labels is not None:  # only the classes the latents ask for need a generator
            wanted = {self.class_names[int(i)] for i in torch.as_tensor(labels).unique().tolist()}
            missing = [c for c in missing if c in wanted]
        if missing:
            raise KeyError(f"no generator for class(es) {missing}; have {sorted(generators)}")

    @torch.no_grad()
    def _iteration(self, engine: GeneratorEvaluator, batchdata: dict) -> dict:
        z = batchdata["latent"].to(engine.state.device).float()
        labels = torch.as_tensor(batchdata["label"]).to(engine.state.device).long().view(-1)
        if "conditional" in engine.generators:
            images = engine.inferer(z, engine.generators["conditional"], labels)
        else:
            images = None
            for c in labels.unique().tolist():
                mask = labels == c
                out = engine.inferer(z[mask], engine.generators[engine.class_names[c]])
                if images is None:
                    images = torch.empty((len(z), *out.shape[1:]), dtype=out.dtype, device=out.device)
                images[mask] = out
        return {"pred": images.float().cpu(), "label": labels.cpu()}


class SyntheticSetWriter:
    """Collect the evaluator's outputs and write them with ``write_synthetic_set`` when the run completes.

    ``self.datalist`` holds the written datalist's path afterwards. (Images are collected in memory: the 2-D sets
    of our papers are at most a few hundred MB at paper scale.)
    """

    def __init__(self, out_dir: str, class_names: Sequence[str], a_min: float, a_max: float, **write_kwargs) -> None:
        self.out_dir = str(out_dir)
        self.class_names = list(class_names)
        self.a_min, self.a_max = a_min, a_max
        self.write_kwargs = write_kwargs
        self.datalist: str | None = None

    def attach(self, engine: Engine) -> None:
        self._images: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        self._images.append(engine.state.output["pred"])
        self._labels.append(engine.state.output["label"])

    def _write(self, engine: Engine) -> None:
        images = torch.cat(self._images) if self._images else torch.empty(0, 1, 1, 1)
        labels = torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)
        self.datalist = write_synthetic_set(
            images,
            labels,
            self.out_dir,
            class_names=self.class_names,
            a_min=self.a_min,
            a_max=self.a_max,
            **self.write_kwargs,
        )
        engine.state.datalist = self.datalist


def generate_synthetic_set(
    generators: dict[str, nn.Module],
    class_names: Sequence[str],
    n_per_class: int | Sequence[int],
    out_dir: str,
    *,
    a_min: float,
    a_max: float,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    **write_kwargs,
) -> str:
    """Generate ``n_per_class`` images per class (or one count per class) and write them as a data set; return the
    datalist path."""
    first = next(iter(generators.values()))
    dataset = LatentDataset(first.sample_latent, n_per_class, len(class_names), seed=seed)
    writer = SyntheticSetWriter(str(Path(out_dir)), class_names, a_min, a_max, **write_kwargs)
    evaluator = GeneratorEvaluator(
        device, DataLoader(dataset, batch_size=batch_size), generators, class_names, val_handlers=[writer]
    )
    evaluator.run()
    return writer.datalist
