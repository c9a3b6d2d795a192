"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data"), written from the paper.

``AdaptiveAugment`` is a differentiable batch transform applied to *every* image the discriminator sees: reals and
fakes, in D's step, in G's step (gradients flow through it into G) and in the R1 step. Each transformation is
applied to each image independently with probability ``p``; the leaks the paper warns about do not happen as long
as ``p`` stays below about 0.8, because then the augmented distribution still identifies the clean one.

Pipelines (the paper's names): ``blit`` = x-flip, 90-degree rotations, integer translation (up to 1/8 of the side);
``geom`` = isotropic scale (lognormal, std 0.2 ln 2), pre-rotation, anisotropic scale, post-rotation (each rotation
with probability 1 - sqrt(1 - p)), fractional translation (std 1/8); ``color`` = brightness (N(0, 0.2)), contrast
(lognormal, std 0.5 ln 2), luma flip, hue rotation and saturation (the last three only change RGB images; for
grayscale luma flip negates the image). ``bgc`` = blit + geom + color, the paper's default.

Differences from the paper, and why: all geometric transforms are composed into one affine matrix per image and
applied with one bilinear ``grid_sample`` (reflection padding), where the paper upsamples with a wavelet filter
before resampling to reduce aliasing; integer translations and 90-degree rotations are still exact, because they
sample pixel centres. No frequency-domain ("filter") or corruption ("noise", "cutout") transforms.

``p`` is either fixed (``ada_target=None``; required under differential privacy, where a p computed from D's
output on real images would leak information about them) or adapted by ``AdaptiveAugmentHandler``:
every ``interval`` iterations, ``r_t = E[sign(D(real))]`` is compared with the target (0.6) and ``p`` moves by
``sign(r_t - target) * batch * interval / (speed_kimg * 1000)`` (p can go from 0 to 1 in ``speed_kimg`` thousand
images; the paper uses 500).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from torch import nn

__all__ = ["PIPELINES", "AdaptiveAugment", "AdaptiveAugmentHandler"]

PIPELINES = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
    "bg": ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"),
    "bgc": ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "lumaflip",
            "hue", "saturation"),
}  # fmt: skip


def _rot(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    m = torch.zeros(theta.shape[0], 3, 3, dtype=theta.dtype)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = c, -s, s, c, 1
    return m


def _scale(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.zeros(sx.shape[0], 3, 3, dtype=sx.dtype)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = sx, sy, 1
    return m


def _translate(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, dtype=tx.dtype).repeat(tx.shape[0], 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


class AdaptiveAugment(nn.Module):
    """ADA's augmentation pipe for a batch (B, C, H, W) in [-1, 1]; differentiable with respect to the images.

    Args:
        pipeline: a key of ``PIPELINES`` (default ``"bgc"``) or a sequence of transform names.
        p: initial (or fixed) probability of each transformation.
        seed: seed of the pipe's own generator (``set_random_state``), so augmentation is reproducible.

    The probability lives in the buffer ``p`` (saved with the module's state dict, so a resumed run continues with
    the adapted value).
    """

    def __init__(self, pipeline: str | tuple = "bgc", p: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        names = PIPELINES[pipeline] if isinstance(pipeline, str) else tuple(pipeline)
        unknown = [n for n in names if n not in PIPELINES["bgc"]]
        if unknown:
            raise ValueError(f"unknown ADA transform(s) {unknown}; known: {PIPELINES['bgc']}")
        self.names = names
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float64))
        self.generator = torch.Generator(device="cpu")
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> AdaptiveAugment:
        self.generator.manual_seed(int(seed))
        return self

    # random draws happen on the CPU generator (reproducible on any device), then move to the images' device
    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator, dtype=torch.float64)

    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator, dtype=torch.float64)

    def _gate(self, b: int, prob: float | None = None) -> torch.Tensor:
        return (self._rand(b) < (float(self.p) if prob is None else prob)).double()

    def geometric_matrix(self, b: int, height: int, width: int) -> torch.Tensor:
        """(B, 3, 3) output->input pixel-offset transform composed from the enabled geometric transforms."""
        m = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
        n = self.names
        if "xflip" in n:
            flip = 1 - 2 * (self._gate(b) * torch.floor(self._rand(b) * 2))
            m = m @ _scale(flip, torch.ones(b, dtype=torch.float64))
        if "rotate90" in n:
            quarter = self._gate(b) * torch.floor(self._rand(b) * 4)
            m = m @ _rot(quarter * (math.pi / 2))
        if "xint" in n:
            g = self._gate(b)
            tx = torch.round((self._rand(b) * 2 - 1) * 0.125 * width) * g
            ty = torch.round((self._rand(b) * 2 - 1) * 0.125 * height) * g
            m = m @ _translate(tx, ty)
        if "scale" in n:
            s = torch.exp2(self._randn(b) * 0.2 * self._gate(b))
            m = m @ _scale(s, s)
        p_rot = 1 - math.sqrt(max(0.0, 1 - float(self.p)))  # two rotations: overall probability about p
        if "rotate" in n:
            m = m @ _rot((self._rand(b) * 2 - 1) * math.pi * self._gate(b, p_rot))
        if "aniso" in n:
            s = torch.exp2(self._randn(b) * 0.2 * self._gate(b))
            m = m @ _scale(s, 1 / s)
        if "rotate" in n:
            m = m @ _rot((self._rand(b) * 2 - 1) * math.pi * self._gate(b, p_rot))
        if "xfrac" in n:
            g = self._gate(b)
            m = m @ _translate(self._randn(b) * 0.125 * width * g, self._randn(b) * 0.125 * height * g)
        return m

    def color_matrix(self, b: int, channels: int) -> torch.Tensor:
        """(B, C + 1, C + 1) affine colour transform (a homogeneous coordinate carries brightness)."""
        c = torch.eye(4, dtype=torch.float64).repeat(b, 1, 1)
        n = self.names
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64) / math.sqrt(3)
        proj = torch.outer(luma, luma)  # projection on the luma axis (RGB)
        if "brightness" in n:
            t = self._randn(b) * 0.2 * self._gate(b)
            c = _translate3(t) @ c
        if "contrast" in n:
            s = torch.exp2(self._randn(b) * 0.5 * self._gate(b))
            c = _scale3(s) @ c
        if "lumaflip" in n:
            i = torch.floor(self._rand(b) * 2) * self._gate(b)
            c = (torch.eye(4, dtype=torch.float64) - 2 * proj * i[:, None, None]) @ c
        if "hue" in n:
            theta = (self._rand(b) * 2 - 1) * math.pi * self._gate(b)
            c = _rotate_about_luma(theta) @ c
        if "saturation" in n:
            s = torch.exp2(self._randn(b) * 1.0 * self._gate(b))
            c = (proj + (torch.eye(4, dtype=torch.float64) - proj) * s[:, None, None]) @ c
        if channels == 3:
            return c
        if channels == 1:
            # gray images: luma is the only axis; luma flip negates, hue/saturation do nothing
            gray = torch.zeros(b, 2, 2, dtype=torch.float64)
            gray[:, 0, 0] = (luma[:3] @ c[:, :3, :3] @ luma[:3].view(3, 1)).view(-1)
            gray[:, 0, 1] = (luma[:3] @ c[:, :3, 3:]).view(-1) / math.sqrt(3)
            gray[:, 1, 1] = 1
            return gray
        raise ValueError(f"ADA colour transforms need 1 or 3 channels, got {channels}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if float(self.p) <= 0:
            return images
        b, ch, h, w = images.shape
        geometric = any(t in self.names for t in PIPELINES["bg"])
        if geometric:
            m = self.geometric_matrix(b, h, w)
            # pixel offsets -> normalised coordinates ([-1, 1] spans the side; align_corners=False)
            to_norm = _scale(torch.full((b,), 2.0 / w, dtype=torch.float64), torch.full((b,), 2.0 / h).double())
            from_norm = torch.linalg.inv(to_norm)
            theta = (to_norm @ m @ from_norm)[:, :2, :].to(device=images.device, dtype=images.dtype)
            grid = F.affine_grid(theta, [b, ch, h, w], align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if any(t in self.names for t in PIPELINES["color"]):
            c = self.color_matrix(b, ch).to(device=images.device, dtype=images.dtype)
            flat = images.reshape(b, ch, h * w)
            images = (c[:, :ch, :ch] @ flat + c[:, :ch, ch:]).reshape(b, ch, h, w)
        return images


def _translate3(t: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4, dtype=t.dtype).repeat(t.shape[0], 1, 1)
    m[:, :3, 3] = t[:, None]
    return m


def _scale3(s: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4, dtype=s.dtype).repeat(s.shape[0], 1, 1)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation about the (1, 1, 1) axis, as a (B, 4, 4) colour matrix."""
    k = torch.tensor([1.0, 1.0, 1.0], dtype=theta.dtype) / math.sqrt(3)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=theta.dtype)
    eye = torch.eye(3, dtype=theta.dtype)
    r = eye + torch.sin(theta)[:, None, None] * kx + (1 - torch.cos(theta))[:, None, None] * (kx @ kx)
    m = torch.eye(4, dtype=theta.dtype).repeat(theta.shape[0], 1, 1)
    m[:, :3, :3] = r
    return m


class AdaptiveAugmentHandler:
    """Ignite handler that adapts ``augment.p`` towards the overfitting target ``r_t = E[sign(D(real))]``.

    Reads ``engine.state.output[key]`` (the batch mean of sign(D(real)), which ``StyleGAN2Objective`` logs as
    ``d_real_sign``) every iteration; every ``interval`` iterations it moves p by
    ``sign(r_t - target) * batch_size * interval / (speed_kimg * 1000)`` and clips it to [0, 1]. The current p is
    logged as ``ada_p`` in the next outputs' ``engine.state.metrics``. r_t is accumulated as a tensor and p moved
    on the device, so the heuristic adds no device sync (a checkpoint's ``state_dict`` makes the one float).

    Never attach it under differential privacy: r_t is computed from D's outputs on private images.
    """

    def __init__(
        self, augment: AdaptiveAugment, target: float = 0.6, interval: int = 4, speed_kimg: float = 500.0,
        batch_size: int = 16, key: str = "d_real_sign",
    ) -> None:  # fmt: skip
        self.augment = augment
        self.target = float(target)
        self.interval = max(1, int(interval))
        self.speed_kimg = float(speed_kimg)
        self.batch_size = int(batch_size)
        self.key = key
        self._sum, self._n = 0.0, 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def state_dict(self) -> dict:
        """The r_t sum and count since p last moved (an interval can span a checkpoint; p itself is the pipe's)."""
        return {"sum": float(self._sum), "n": self._n}

    def load_state_dict(self, state: dict) -> None:
        self._sum, self._n = float(state["sum"]), int(state["n"])

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output or {}
        if self.key in out:
            value = out[self.key]
            # summed where it lives (a tensor on the GPU: no sync per step), in float64 as the Python floats were
            self._sum = self._sum + (value.detach().double() if isinstance(value, torch.Tensor) else float(value))
            self._n += 1
            out["ada_p"] = self.augment.p.detach().clone()  # p before this step's move, as a tensor too
        if self._n >= self.interval:
            r_t = self._sum / self._n
            # p moves on its own device, without a sync: copysign gives math.copysign's +1 at r_t == target
            diff = torch.as_tensor(r_t - self.target, dtype=torch.float64, device=self.augment.p.device)
            step = torch.copysign(torch.ones_like(diff), diff) * (
                self.batch_size * self._n / (self.speed_kimg * 1000.0)
            )
            self.augment.p.copy_(torch.clamp(self.augment.p + step, 0.0, 1.0))
            self._sum, self._n = 0.0, 0
