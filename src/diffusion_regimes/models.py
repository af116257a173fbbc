"""Raw network architectures: a DDPM-style U-Net (Ho et al. 2020) for images and a
residual MLP for vectors, both predicting the noise, and the class classifiers (a
small CNN, or torchvision's ResNet-18 without pretrained weights).

The U-Net is configured by ``channels`` (base width), ``channel_mult`` (one
entry per resolution), ``num_res_blocks``, ``attention_resolutions`` (indices of
the resolutions with self-attention, 0 = input resolution) and ``dropout``; the
paper's network is base 64, mult (1, 2, 4, 4), two blocks, attention at
resolutions 1 and 2, dropout 0.1. It is conditioned on a noise level ``c_noise``
through a sinusoidal embedding; the wrapper that owns the noise convention
(:class:`diffusion_regimes.networks.EpsilonModel`) sets ``c_noise`` from the OU time.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def timestep_embedding(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B, dim) of noise levels c_noise (B,)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=c_noise.device) / half)
    args = c_noise.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], 1)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, c // 4) if c >= 4 else 1, c)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(temb, cout)
        self.norm2, self.drop = _norm(cout), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.out = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """DDPM U-Net ``eps(x: (B, C, H, W), c_noise: (B,)) -> (B, C, H, W)``; H, W divisible by
    ``2**(len(channel_mult) - 1)``."""

    def __init__(self, in_channels: int = 1, channels: int = 64, channel_mult: tuple = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attention_resolutions: tuple = (1, 2),
                 dropout: float = 0.1):
        super().__init__()
        temb = 4 * channels
        self.channels = channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, temb), nn.SiLU(), nn.Linear(temb, temb))
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                block = nn.ModuleList([ResBlock(c, channels * mult, temb, dropout)])
                c = channels * mult
                if level in attention_resolutions:
                    block.append(Attention(c))
                self.down.append(block)
                skips.append(c)
            if level < len(channel_mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(c, c, 3, stride=2, padding=1)]))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, temb, dropout), Attention(c),
                                  ResBlock(c, c, temb, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                block = nn.ModuleList([ResBlock(c + skips.pop(), channels * mult, temb, dropout)])
                c = channels * mult
                if level in attention_resolutions:
                    block.append(Attention(c))
                if level > 0 and i == num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(c, c, 3, padding=1))
                self.up.append(block)
        self.out = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, in_channels, 3, padding=1))

    @staticmethod
    def _run_block(block: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(c_noise, self.channels).to(self.inp.weight.dtype))
        h = self.inp(x)
        hs = [h]
        for block in self.down:
            h = self._run_block(block, h, emb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        for block in self.up:
            h = self._run_block(block, torch.cat([h, hs.pop()], 1), emb)
        return self.out(h)


class MLPBlock(nn.Module):
    """Residual block: ``h + W2 drop(silu(W1 silu(h) + temb(emb)))`` (no normalisation: the
    score's magnitude carries information, and LayerNorm slowed learning the mixture's
    class direction in high d)."""

    def __init__(self, width: int, temb: int, dropout: float):
        super().__init__()
        self.fc1, self.temb, self.fc2 = nn.Linear(width, width), nn.Linear(temb, width), nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        u = self.fc1(F.silu(h)) + self.temb(F.silu(emb))
        return h + self.fc2(self.drop(F.silu(u)))


class ResidualMLP(nn.Module):
    """Noise predictor for vectors ``eps(x: (B, d), c_noise: (B,)) -> (B, d)``: an input layer,
    ``depth`` residual blocks of ``width`` conditioned on a sinusoidal embedding of the noise
    level (``time_dim`` features through a two-layer MLP), and a zero-initialised output layer."""

    def __init__(self, d: int, width: int = 512, depth: int = 4, time_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList([MLPBlock(width, width, dropout) for _ in range(depth)])
        self.out = nn.Linear(width, d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(c_noise, self.time_dim).to(self.inp.weight.dtype))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(F.silu(h))


class SmallCNN(nn.Module):
    """Classifier ``logits(x: (B, C, H, W)) -> (B, classes)``: two conv layers and a linear head."""

    def __init__(self, in_channels: int = 1, classes: int = 2, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.SiLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(2 * width * 16, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_unet(cfg: dict, in_channels: int) -> UNet:
    """U-Net from a config ``model`` block."""
    return UNet(in_channels, cfg["channels"], tuple(cfg["channel_mult"]), cfg["num_res_blocks"],
                tuple(cfg["attention_resolutions"]), cfg["dropout"])


def build_mlp(cfg: dict, d: int) -> ResidualMLP:
    """Residual MLP from a config ``mlp`` block for vectors of length d."""
    return ResidualMLP(d, cfg["width"], cfg["depth"], cfg["time_dim"], cfg["dropout"])


#: network architectures of the score models: name -> builder(config, shape of one sample)
def network_input_shape(arch: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one sample as the network of score model ``arch`` takes it, from the
    data's ``shape`` (the U-Net: images (C, H, W); the MLP: flat vectors (d,))."""
    from .scoremodels import score_kind

    return score_kind(arch).input_shape(tuple(shape))


def build_network(arch: str, cfg: dict, shape: tuple[int, ...]) -> nn.Module:
    """A raw noise-predicting network ``net(x: (B, *shape), c_noise: (B,))`` of the trainable
    score model ``arch`` (:mod:`diffusion_regimes.scoremodels`) from its config block, for
    samples of ``shape`` (:func:`network_input_shape`)."""
    from .errors import InputError
    from .scoremodels import score_kind

    try:
        kind = score_kind(arch)
    except InputError as err:
        raise ValueError(str(err)) from None
    if not kind.trainable:
        raise ValueError(f"score model {arch!r} is not a network trained here")
    if tuple(shape) != kind.input_shape(tuple(shape)):
        raise ValueError(f"the {arch} network takes samples of shape {kind.input_shape(tuple(shape))}, "
                         f"not {tuple(shape)}")
    check_network_fits(arch, cfg, shape, copies=1)
    return kind.build_network(cfg, tuple(shape))


def network_parameters(arch: str, cfg: dict, shape: tuple[int, ...]) -> int:
    """The parameter count of a trainable network, from a build on torch's meta device (no
    memory is allocated)."""
    from .scoremodels import score_kind

    with torch.device("meta"):
        return count_parameters(score_kind(arch).build_network(cfg, tuple(shape)))


def check_network_fits(arch: str, cfg: dict, shape: tuple[int, ...], copies: int) -> None:
    """Refuse with one line, before anything is allocated, a network whose ``copies`` float32
    copies of its parameters (1: the weights; 4 for training: weights, gradients and Adam's
    two moments) exceed the memory available here."""
    from .memory import check_fits

    n = network_parameters(arch, cfg, shape)
    block = "model.channels or channel_mult" if arch == "unet" else "its width or depth"
    check_fits(f"the {arch} network ({n:,} parameters, {copies} float32 copies)", 4.0 * n * copies,
               f"make the network smaller ({block})")


CLASSIFIERS = ("small_cnn", "resnet18")


def resnet18(in_channels: int, classes: int = 2) -> nn.Module:
    """torchvision's ResNet-18, randomly initialised (nothing is downloaded), with the
    small-image stem of CIFAR ResNets: a 3x3 stride-1 first convolution and no max
    pooling, so 16 to 64 pixel images keep their resolution into the first stage."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_classifier(cfg: dict, shape: tuple[int, int, int]) -> nn.Module:
    """Two-class classifier from a config ``classifier`` block (``arch``, ``width``)
    for images of ``shape`` (C, H, W)."""
    arch = cfg.get("arch", "small_cnn")
    if arch == "small_cnn":
        return SmallCNN(shape[0], 2, cfg["width"])
    if arch == "resnet18":
        return resnet18(shape[0], 2)
    raise ValueError(f"unknown classifier arch {arch!r}: use one of {CLASSIFIERS}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model: nn.Module, shape: tuple[int, ...]) -> str:
    """Architecture summary: one row per called module that is a child of the model
    or of a ``ModuleList`` (name, type, output shape for one input of ``shape``,
    (C, H, W) or (d,), parameters), in call order, then the total."""
    rows, hooks = [], []

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, nn.ModuleList):
                visit(child, full + ".")
                continue

            def hook(mod, args, out, full=full):
                out = out[0] if isinstance(out, tuple) else out
                rows.append((full, type(mod).__name__, "x".join(map(str, out.shape[1:])), count_parameters(mod)))
            hooks.append(child.register_forward_hook(hook))

    visit(model, "")
    try:
        with torch.no_grad():
            x = torch.zeros(1, *shape)
            model.eval()(x, torch.zeros(1)) if isinstance(model, (UNet, ResidualMLP)) else model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f"{'module':<{width}}  {'type':<18} {'output shape':>16} {'parameters':>12}"]
    lines += [f"{n:<{width}}  {t:<18} {o:>16} {p:>12,}" for n, t, o, p in rows]
    total = count_parameters(model)
    lines.append(f"{'total':<{width}}  {type(model).__name__:<18} {'':>16} {total:>12,}  ({total / 1e6:.2f} M)")
    return "\n".join(lines)
