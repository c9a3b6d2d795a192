"""Feature extractors for generative-quality and memorisation metrics that need no downloaded weights.

Two kinds of feature space:

- ``RandomCNNFeatures``: small convolutional networks with fixed random weights (MONAI ``Convolution`` blocks,
  Kaiming init from a seed), 2-D or 3-D, any channel count, any resolution (global pooling). Random-init embeddings
  are a known weight-free alternative to Inception features (Naeem et al. 2020, section 5); since one random net is
  one arbitrary view, every metric is computed per seed (3 by default) and reported as the mean with the per-seed
  values.
- ``ClassifierFeatures``: the penultimate layer of the project's own domain classifier, read with a forward hook.
  Rule: that classifier must be trained on a split that is separate from the generator's training images, or the
  feature space itself has seen the training set and the privacy metrics computed in it are biased.

Both return, for images ``(N, C, H, W[, D])`` in [-1, 1], a list with one ``(N, F)`` float64 array per replicate
(one per seed for random nets, one for a classifier): the metrics treat each replicate as one feature space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = [
    "ClassifierFeatures",
    "FeatureSpace",
    "RandomCNNFeatures",
    "RandomConvNet",
    "extract_features",
    "resolve_device",
    "standardize",
]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device``; None means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def extract_features(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 128,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Apply ``fn`` to ``images`` in batches and return the flattened features.

    Args:
        fn: maps a batch ``(B, C, *spatial)`` on ``device`` to features ``(B, F)`` or ``(B, F, *spatial')``; feature
            maps with spatial axes are averaged over them (global average pooling).
        images: ``(N, C, *spatial)``, on any device (batches are moved to ``device`` one at a time, so that a large
            set on the CPU never has to fit on the GPU at once).
        batch_size: images per forward pass.
        device: where ``fn`` runs; None: CUDA when available.

    Returns:
        ``(N, F)`` float64 array.
    """
    dev = resolve_device(device)
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(dev, dtype=torch.float32)
        feats = fn(batch)
        if feats.ndim > 2:
            feats = feats.flatten(2).mean(-1)
        out.append(feats.reshape(feats.shape[0], -1).double().cpu())
    if not out:
        return np.zeros((0, 0), dtype=np.float64)
    return torch.cat(out).numpy()


def standardize(reference: np.ndarray, *others: np.ndarray, eps: float = 1e-8) -> list[np.ndarray]:
    """Z-score every array with the per-feature mean and std of ``reference`` ``(N, F)``.

    Different layers of a random net (and mean- vs std-pooled channels) have very different scales; without this,
    Euclidean distances (PRDC, nearest neighbours) would see only the largest-scale features. Features that are
    constant on the reference keep unit scale (std floor ``eps``) so that they add nothing but never divide by 0.

    Returns:
        ``[reference_z, *others_z]``, each with the shape it came with.
    """
    mean = reference.mean(axis=0, keepdims=True)
    std = reference.std(axis=0, keepdims=True)
    std = np.where(std > eps, std, 1.0)
    return [(a - mean) / std for a in (reference, *others)]


class RandomConvNet(nn.Module):
    """A fixed random-weight CNN: strided 3x3(x3) convolutions with LeakyReLU, globally pooled at every stage.

    No normalisation layer on purpose: batch statistics would make an image's features depend on its batch, and
    instance normalisation would erase the absolute intensities that matter in medical images (e.g. water vs soft
    tissue density). Kaiming-normal init for the LeakyReLU slope keeps activations at a stable scale through depth.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the input images (1 grey, 3 RGB, ...).
        channels: output channels of each stage; each stage halves the resolution.
        seed: seeds the weights (the global RNG is left untouched).

    Forward: ``(B, in_channels, *spatial)`` -> ``(B, 2 * sum(channels))``: per stage, the per-channel spatial mean
    and standard deviation (first- and second-order statistics of the random filter responses, multi-scale).
    The default widths give 240 features: enough to see texture and shape statistics, few enough that the
    covariance in a Frechet distance is estimated reasonably from ~1,000 images (its bias grows with F^2 / N).
    """

    def __init__(
        self, spatial_dims: int = 2, in_channels: int = 1, channels: Sequence[int] = (8, 16, 32, 64), seed: int = 0
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.seed = seed
        stages = []
        prev = in_channels
        # The layers' default init draws from the global RNG; fork it so that building a feature net never changes
        # the random stream of the caller (e.g. a training run that audits itself).
        with torch.random.fork_rng(devices=[]):
            for ch in channels:
                stages.append(
                    Convolution(
                        spatial_dims,
                        prev,
                        ch,
                        strides=2,
                        kernel_size=3,
                        act=("leakyrelu", {"negative_slope": 0.2}),
                        norm=None,
                        bias=True,
                    )
                )
                prev = ch
        self.stages = nn.ModuleList(stages)
        gen = torch.Generator().manual_seed(int(seed))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu", generator=gen)
                nn.init.zeros_(m.bias)
        self.requires_grad_(False)
        self.eval()

    @property
    def out_features(self) -> int:
        return 2 * sum(s.conv.out_channels for s in self.stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for stage in self.stages:
            # Inputs smaller than 2 px along an axis cannot be halved again; stop there (resolution-agnostic).
            if min(x.shape[2:]) < 2:
                break
            x = stage(x)
            flat = x.flatten(2)
            feats.append(flat.mean(-1))
            feats.append(flat.std(-1, correction=0))
        out = torch.cat(feats, dim=1)
        if out.shape[1] < self.out_features:  # tiny input: pad the stages that did not run so F stays fixed
            out = torch.nn.functional.pad(out, (0, self.out_features - out.shape[1]))
        return out


class FeatureSpace:
    """Interface of a feature space: a ``name`` and ``extract(images) -> list of (N, F) arrays``, one per replicate.

    ``replicates`` names the replicates (e.g. ``["seed0", "seed1", "seed2"]``) in the order ``extract`` returns them.
    """

    name: str = "features"

    @property
    def replicates(self) -> list[str]:
        raise NotImplementedError

    def extract(self, images: torch.Tensor) -> list[np.ndarray]:
        raise NotImplementedError


class RandomCNNFeatures(FeatureSpace):
    """Features of ``len(seeds)`` fixed random ``RandomConvNet``s, built for the images' dimensionality and channels.

    Args:
        seeds: one network per seed; metrics are computed per seed and averaged.
        channels: stage widths of each network (feature size ``2 * sum(channels)``).
        batch_size: images per forward pass.
        device: None: CUDA when available, else CPU.

    ``extract(images (N, C, *spatial))`` -> ``[(N, F)] * len(seeds)``.
    """

    name = "randcnn"

    def __init__(
        self,
        seeds: Sequence[int] = (0, 1, 2),
        channels: Sequence[int] = (8, 16, 32, 64),
        batch_size: int = 128,
        device: str | torch.device | None = None,
    ) -> None:
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("RandomCNNFeatures needs at least one seed.")
        self.channels = tuple(int(c) for c in channels)
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self._nets: dict[tuple[int, int, int], RandomConvNet] = {}

    @property
    def replicates(self) -> list[str]:
        return [f"seed{s}" for s in self.seeds]

    def network(self, spatial_dims: int, in_channels: int, seed: int) -> RandomConvNet:
        """The (cached) network for this image geometry and seed, on ``self.device``."""
        key = (spatial_dims, in_channels, seed)
        if key not in self._nets:
            self._nets[key] = RandomConvNet(spatial_dims, in_channels, self.channels, seed).to(self.device)
        return self._nets[key]

    def extract(self, images: torch.Tensor) -> list[np.ndarray]:
        spatial_dims, in_channels = images.ndim - 2, images.shape[1]
        return [
            extract_features(self.network(spatial_dims, in_channels, s), images, self.batch_size, self.device)
            for s in self.seeds
        ]


def _last_linear_name(model: nn.Module) -> str:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(
            "ClassifierFeatures: the model has no nn.Linear layer, so its penultimate layer cannot be found; "
            "pass feature_layer='<module name>' (see model.named_modules())."
        )
    return names[-1]


class ClassifierFeatures(FeatureSpace):
    """Penultimate-layer features of a trained classifier, captured with a forward hook.

    The classifier must have been trained on images that are NOT the generator's training images (the bundles train
    it on a separate split); otherwise the feature space has seen the training set and biases the privacy metrics.

    Args:
        model: any ``nn.Module`` that accepts ``(B, C, *spatial)``; it is used where it is (its device), in eval mode
            (its training flag is restored afterwards), without gradients.
        feature_layer: None: the input of the model's last ``nn.Linear`` (the penultimate activations, e.g.
            ``class_layers.out`` of MONAI's DenseNet121). A string: the OUTPUT of that sub-module (a name from
            ``model.named_modules()``). A callable: called on the batch instead of the model, returning features
            (e.g. ``model.features``; the only option for a TorchScript model, which takes no hooks).
            Spatial feature maps are globally average-pooled.
        preprocess: optional ``batch -> batch`` applied first (e.g. [-1, 1] -> the model's training intensity range).
        batch_size: images per forward pass.
        name: name of the feature space in reports (``frechet_distance_<name>``).

    ``extract(images (N, C, *spatial))`` -> ``[(N, F)]``.
    """

    def __init__(
        self,
        model: nn.Module,
        feature_layer: str | Callable[[torch.Tensor], torch.Tensor] | None = None,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        batch_size: int = 128,
        name: str = "classifier",
    ) -> None:
        self.model = model
        self.feature_layer = feature_layer
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.name = name

    @property
    def replicates(self) -> list[str]:
        return [self.name]

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        for b in self.model.buffers():
            return b.device
        return torch.device("cpu")

    def extract(self, images: torch.Tensor) -> list[np.ndarray]:
        was_training = self.model.training
        self.model.eval()
        captured: list[torch.Tensor] = []
        handle = None
        if callable(self.feature_layer):
            fn = self.feature_layer
        elif isinstance(self.model, torch.jit.ScriptModule):
            raise ValueError(
                "ClassifierFeatures: TorchScript models support no forward hooks, so a layer cannot be read by name; "
                "pass feature_layer as a callable (e.g. lambda x: model.features(x)) or load the eager network "
                "(state dict + network definition)."
            )
        else:
            if self.feature_layer is None:
                layer, use_input = self.model.get_submodule(_last_linear_name(self.model)), True
            else:
                layer, use_input = self.model.get_submodule(self.feature_layer), False

            def hook(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                captured.append(inputs[0] if use_input else output)

            handle = layer.register_forward_hook(hook)

            def fn(x: torch.Tensor) -> torch.Tensor:
                captured.clear()
                self.model(x)
                if not captured:
                    raise RuntimeError(f"ClassifierFeatures: layer {self.feature_layer!r} was not called in forward.")
                return captured[-1]

        def run(x: torch.Tensor) -> torch.Tensor:
            return fn(self.preprocess(x) if self.preprocess is not None else x)

        try:
            feats = extract_features(run, images, self.batch_size, self._device())
        finally:
            if handle is not None:
                handle.remove()
            self.model.train(was_training)
        return [feats]
