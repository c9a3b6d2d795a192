"""Conditional StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN"), written from
the papers for the SpineGAN bundle (Schonfeld & Veeravagu 2022), with the conditioning of StyleGAN2-ADA (Karras et
al. 2020, "Training GANs with Limited Data"). No NVIDIA code is used (their licence is non-commercial).

Generator (``StyleGAN2Generator``)
    mapping: z (normalised to unit second moment) ++ class embedding (normalised) -> ``mapping_layers`` equalised
    dense layers (lr multiplier 0.01, leaky ReLU) -> w; a running average of w for truncation.
    synthesis: a learned 4x4 constant -> per resolution two 3x3 *modulated* convolutions (the first upsamples),
    each with weight demodulation, per-pixel noise of learned strength, bias and leaky ReLU; a modulated 1x1
    ``to_image`` layer per resolution whose outputs are upsampled and summed ("skip" generator).
    style mixing: in training, with probability ``style_mixing_prob`` a second w takes over from a random layer on.

Discriminator (``StyleGAN2Discriminator``)
    ``from_image`` 1x1 at full resolution -> residual blocks (3x3 conv, blurred stride-2 3x3 conv; skip: blurred
    downsample + 1x1 conv; sum scaled by 1/sqrt(2)) -> 4x4 epilogue: optional minibatch standard deviation, 3x3 conv,
    dense -> features h; output ``psi(h) + <embed(c), h> / sqrt(dim h)`` (projection, Miyato & Koyama 2018).

Every weight uses the equalised learning rate (stored N(0, 1), scaled by He's constant at run time). Up/downsampling
low-pass filters with the binomial [1, 3, 3, 1] kernel, built inside ``forward`` rather than kept as a buffer: the
networks hold parameters only in leaf layers and no buffers in D, which is what Opacus' per-sample gradient fallback
(``torch.func``) needs. Under DP, switch the minibatch-std layer off (``mbstd_group_size=0``): it couples samples.

Square images, side a power of two >= 4 (resize real data to 32 / 64 / 256 first).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EqualConv2d",
    "EqualLinear",
    "MappingNetwork",
    "ModulatedConv2d",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "blur_downsample",
    "blur_upsample",
    "stylegan2_channels",
]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU 0.2 scaled by sqrt(2), He's gain (``math.sqrt`` inline: TorchScript reads no module-level floats)."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


def stylegan2_channels(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at ``resolution``: ``min(channel_base // resolution, channel_max)`` (StyleGAN2's rule).

    The authors' 256-px run used StyleGAN2-ADA's ``auto`` config: base 16384, max 512 -> 512 up to 32 px, then
    256, 128, 64 at 64, 128, 256 px."""
    return max(1, min(int(channel_base) // int(resolution), int(channel_max)))


def _check_size(image_size: int, name: str) -> int:
    size = int(image_size)
    if size < 4 or size & (size - 1):
        raise ValueError(f"{name}: image_size must be a power of two >= 4, got {image_size}")
    return size


# ------------------------------------------------------------------------------------------------ parameter-free FIR
def _binomial(x: torch.Tensor, gain: float) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=x.dtype, device=x.device)
    k = torch.outer(k, k)
    k = k / k.sum() * gain
    return k.expand(x.shape[1], 1, 4, 4)


def blur_upsample(x: torch.Tensor) -> torch.Tensor:
    """Upsample (B, C, H, W) -> (B, C, 2H, 2W): zero insertion + [1, 3, 3, 1] low-pass, as one transposed conv."""
    return F.conv_transpose2d(x, _binomial(x, 4.0), stride=2, padding=1, groups=x.shape[1])


def blur_downsample(x: torch.Tensor) -> torch.Tensor:
    """Downsample (B, C, H, W) -> (B, C, H/2, W/2): [1, 3, 3, 1] low-pass + stride 2."""
    return F.conv2d(x, _binomial(x, 1.0), stride=2, padding=1, groups=x.shape[1])


# ------------------------------------------------------------------------------------------------ equalised layers
class EqualLinear(nn.Module):
    """Dense layer with equalised learning rate: ``y = x @ (W * lr_mul / sqrt(in)).T + b * lr_mul``.

    ``activation="lrelu"`` applies leaky ReLU 0.2 scaled by sqrt(2) (He's gain, so activations keep unit variance).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
        activation: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation
        self.lrelu = activation == "lrelu"  # a bool: TorchScript cannot compare an attribute that may be None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        b = bias * self.lr_mul if bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, b)
        if self.lrelu:
            x = _lrelu(x)
        return x


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate; ``down=True`` (odd kernels) blurs, then convolves with stride 2."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True, down: bool = False,
        activation: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.down = down
        self.activation = activation
        self.lrelu = activation == "lrelu"  # a bool: TorchScript cannot compare an attribute that may be None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        k = self.weight.shape[-1]
        if self.down:
            # StyleGAN2's downsampling conv: [1, 3, 3, 1] blur padded to H + 1, then a stride-2 conv without padding
            x = F.conv2d(F.pad(x, (2, 2, 2, 2)), _binomial(x, 1.0), groups=x.shape[1])
            x = F.conv2d(x, w, self.bias, stride=2)
        else:
            x = F.conv2d(x, w, self.bias, padding=k // 2)
        if self.lrelu:
            x = _lrelu(x)
        return x


# ------------------------------------------------------------------------------------------------ generator
class MappingNetwork(nn.Module):
    """z (B, z_dim) [+ class c (B,)] -> w (B, w_dim). ``num_classes=0``: unconditional."""

    def __init__(
        self, z_dim: int, w_dim: int, num_classes: int = 0, layers: int = 2, lr_mul: float = 0.01,
        embed_dim: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.z_dim, self.w_dim, self.num_classes = int(z_dim), int(w_dim), int(num_classes)
        embed_dim = int(embed_dim or w_dim)
        self.embed = EqualLinear(self.num_classes, embed_dim) if self.num_classes > 0 else None
        dims = [self.z_dim + (embed_dim if self.embed is not None else 0)] + [self.w_dim] * int(layers)
        self.layers = nn.ModuleList(
            EqualLinear(a, b, lr_mul=lr_mul, activation="lrelu") for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    @staticmethod
    def _normalize(x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self._normalize(z)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: call it as G(z, labels)")
            y = self.embed(F.one_hot(labels.long().view(-1), self.num_classes).to(z.dtype))
            x = torch.cat([x, self._normalize(y)], 1)
        for layer in self.layers:
            x = layer(x)
        return x


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution: per-sample input-channel scales ``s = A(w)``, shared weight, and per-sample
    output-channel demodulation ``1 / sqrt(sum_{i,k} (s_i W_{o,i,k})^2)``.

    Implemented as scale -> ordinary conv -> scale (mathematically identical to convolving with the per-sample
    modulated/demodulated weight, and fast in channels-last on CPU). ``up=True`` upsamples (blurred) first.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool = True,
        up: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.up = up

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # (B, in)
        weight = self.weight * self.weight_gain
        if self.up:
            x = blur_upsample(x)
        x = x * styles[:, :, None, None].to(x.dtype)
        x = F.conv2d(x, weight, padding=self.weight.shape[-1] // 2)
        if self.demodulate:
            # sum over (in, k, k) of (s_i W_oik)^2 = s^2 @ (sum_k W_oik^2)^T
            demod = torch.rsqrt(styles.square() @ weight.square().sum((2, 3)).t() + 1e-8)  # (B, out)
            x = x * demod[:, :, None, None].to(x.dtype)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv -> + noise * learned strength -> + bias -> leaky ReLU (x sqrt 2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, up: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, demodulate=True, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: bool = True) -> torch.Tensor:
        x = self.conv(x, w)
        if noise:
            b, _, h, wd = x.shape
            x = x + torch.randn(b, 1, h, wd, device=x.device, dtype=x.dtype) * self.noise_strength
        return _lrelu(x + self.bias[None, :, None, None])


class ToImage(nn.Module):
    """Modulated 1x1 conv without demodulation, + bias: features -> image channels (the "toRGB" layer)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class StyleGAN2Generator(nn.Module):
    """Conditional StyleGAN2 generator ("skip" architecture).

    Args:
        latent_dim: z dimension (paper 512).
        w_dim: w dimension (paper 512).
        num_classes: classes of the condition (2: normal / abnormal); 0 for an unconditional G.
        image_size: output side, a power of two >= 4 (paper 256).
        out_channels: image channels (1 for radiographs).
        mapping_layers: dense layers of the mapping network (the authors: 2, StyleGAN2-ADA's ``auto`` config).
        channel_base, channel_max: feature maps per resolution (``stylegan2_channels``).
        style_mixing_prob: probability of mixing two w's in a training forward pass (paper 0.9).
        w_avg_beta: decay of the tracked average of w (for truncation).
        truncation_psi: 1 = no truncation; < 1 pulls w towards the (class-agnostic) average at sampling time.
        noise: add per-pixel noise inputs (as in the paper).

    Shapes: ``forward(z (B, latent_dim), labels (B,) | None) -> (B, out_channels, image_size, image_size)``,
    output unbounded (no tanh, as StyleGAN2; about [-1, 1] once trained). ``return_ws=True`` also returns
    w broadcast to every layer, ``(B, num_ws, w_dim)``, for the path-length regulariser.
    """

    def __init__(
        self,
        latent_dim: int = 512,
        w_dim: int = 512,
        num_classes: int = 2,
        image_size: int = 256,
        out_channels: int = 1,
        mapping_layers: int = 2,
        channel_base: int = 16384,
        channel_max: int = 512,
        style_mixing_prob: float = 0.9,
        w_avg_beta: float = 0.995,
        truncation_psi: float = 1.0,
        noise: bool = True,
    ) -> None:
        super().__init__()
        self.image_size = _check_size(image_size, "StyleGAN2Generator")
        self.latent_dim, self.w_dim, self.num_classes = int(latent_dim), int(w_dim), int(num_classes)
        self.out_channels = int(out_channels)
        self.style_mixing_prob = float(style_mixing_prob)
        self.w_avg_beta = float(w_avg_beta)
        self.truncation_psi = float(truncation_psi)
        self.noise = bool(noise)
        self.mapping = MappingNetwork(self.latent_dim, self.w_dim, self.num_classes, layers=mapping_layers)
        self.register_buffer("w_avg", torch.zeros(self.w_dim))

        def ch(res: int) -> int:
            return stylegan2_channels(res, channel_base, channel_max)

        self.const = nn.Parameter(torch.randn(ch(4), 4, 4))
        self.resolutions = [2**i for i in range(2, int(math.log2(self.image_size)) + 1)]
        self.convs = nn.ModuleList()
        self.to_images = nn.ModuleList()
        self.convs.append(SynthesisLayer(ch(4), ch(4), self.w_dim))
        self.to_images.append(ToImage(ch(4), self.out_channels, self.w_dim))
        for res in self.resolutions[1:]:
            self.convs.append(SynthesisLayer(ch(res // 2), ch(res), self.w_dim, up=True))
            self.convs.append(SynthesisLayer(ch(res), ch(res), self.w_dim))
            self.to_images.append(ToImage(ch(res), self.out_channels, self.w_dim))
        #: one w per conv layer, plus one for the last to_image (the others share their block's second conv's w)
        self.num_ws = len(self.convs) + 1

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def sample_latent(self, batch_size: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I), shape (batch_size, latent_dim)."""
        return torch.randn(batch_size, self.latent_dim, device=device, generator=generator)

    def map(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float | None = None):
        """z (+ labels) -> w broadcast to ``(B, num_ws, w_dim)``, with w-average tracking, truncation and mixing."""
        w = self.mapping(z, labels)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        psi = self.truncation_psi if truncation_psi is None else float(truncation_psi)
        if psi != 1.0:
            w = self.w_avg.lerp(w, psi)
        ws = w[:, None, :].repeat(1, self.num_ws, 1)
        if self.training and self.style_mixing_prob > 0:
            # one draw per batch, as in the reference implementation: from layer `cutoff` on, w comes from z2
            if torch.rand(()) < self.style_mixing_prob:
                cutoff = int(torch.randint(1, self.num_ws, ()))
                w2 = self.mapping(torch.randn_like(z), labels)
                ws = torch.cat([ws[:, :cutoff], w2[:, None, :].expand(-1, self.num_ws - cutoff, -1)], 1)
        return ws

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (B, num_ws, w_dim) -> image (B, out_channels, image_size, image_size)."""
        b = ws.shape[0]
        x = self.const[None].expand(b, -1, -1, -1).contiguous(memory_format=torch.channels_last)
        image = x  # a tensor until the first to_image replaces it (TorchScript types every variable)
        # resolution k: conv 0 at 4 x 4, convs 2k - 1 (upsampling) and 2k above; conv j reads ws[:, j] and
        # to_image k ws[:, 2k + 1]. Written as loops over the ModuleLists because TorchScript indexes them by
        # literals only; the layers run in the same order as ever.
        for k, to_image in enumerate(self.to_images):
            for j, conv in enumerate(self.convs):
                if j == 2 * k - 1 or j == 2 * k:
                    x = conv(x, ws[:, j], self.noise)
            y = to_image(x, ws[:, 2 * k + 1])
            image = y if k == 0 else blur_upsample(image) + y
        return image

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, return_ws: bool = False,
        truncation_psi: float | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        ws = self.map(z, labels, truncation_psi)
        image = self.synthesis(ws)
        if return_ws:  # (two returns, not an if-expression: TorchScript types each branch on its own)
            return image, ws
        return image


# ------------------------------------------------------------------------------------------------ discriminator
class DiscriminatorBlock(nn.Module):
    """Residual block: conv 3x3 -> blurred stride-2 conv 3x3, plus a blurred-downsample 1x1 skip; sum / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True, activation="lrelu")
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(blur_downsample(x))
        x = self.conv1(self.conv0(x))
        return (x + y) * (1.0 / math.sqrt(2.0))


def minibatch_std(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append one feature map: the std over groups of ``group_size`` samples, averaged over channels and pixels.

    The group is the largest divisor of the batch not above ``group_size`` (a batch of 6 with group 4 uses 3)."""
    b, c, h, w = x.shape
    g = 1
    for d in range(1, min(group_size, b) + 1):  # (a loop: TorchScript compiles no comprehension with ``if``)
        if b % d == 0:
            g = d
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # (B/g, C, H, W)
    y = y.mean((1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)  # sample i belongs to group i % (B/g)
    return torch.cat([x, y.to(x.dtype)], 1)


class StyleGAN2Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator with projection conditioning.

    Args:
        in_channels: image channels.
        num_classes: 0 for unconditional; else ``forward(x, labels)`` adds the projection term.
        image_size: input side, a power of two >= 4.
        channel_base, channel_max: feature maps per resolution (``stylegan2_channels``).
        mbstd_group_size: minibatch-std group (paper 4 at batch 16); 0 or 1 switches the layer off (required
            under DP-SGD, where per-sample gradients must not depend on other samples).

    Shapes: ``forward(x (B, in_channels, S, S), labels (B,) | None) -> logits (B,)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        image_size: int = 256,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
    ) -> None:
        super().__init__()
        self.image_size = _check_size(image_size, "StyleGAN2Discriminator")
        self.num_classes = int(num_classes)
        self.mbstd_group_size = int(mbstd_group_size)

        def ch(res: int) -> int:
            return stylegan2_channels(res, channel_base, channel_max)

        self.from_image = EqualConv2d(in_channels, ch(self.image_size), 1, activation="lrelu")
        resolutions = [2**i for i in range(int(math.log2(self.image_size)), 2, -1)]
        self.blocks = nn.ModuleList(DiscriminatorBlock(ch(r), ch(r // 2)) for r in resolutions)
        extra = 1 if self.mbstd_group_size > 1 else 0
        self.conv = EqualConv2d(ch(4) + extra, ch(4), 3, activation="lrelu")
        self.fc = EqualLinear(ch(4) * 16, ch(4), activation="lrelu")
        self.out = EqualLinear(ch(4), 1)
        self.embed = EqualLinear(self.num_classes, ch(4), bias=False) if self.num_classes > 0 else None
        self.feature_dim = ch(4)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.from_image(x)
        for block in self.blocks:
            x = block(x)
        if self.mbstd_group_size > 1:
            x = minibatch_std(x, self.mbstd_group_size)
        h = self.fc(self.conv(x).flatten(1))
        out = self.out(h).view(-1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is conditional: call it as D(x, labels)")
            e = self.embed(F.one_hot(labels.long().view(-1), self.num_classes).to(h.dtype))
            out = out + (e * h).sum(1) / math.sqrt(self.feature_dim)
        return out
