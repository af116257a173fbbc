"""The networks trained by the workflow: ``unet`` (images, config block ``model``) and
``mlp`` (any data, the residual MLP, config block ``mlp``)."""

from __future__ import annotations

import math

from . import TrainedNetwork, register


@register
class UNet(TrainedNetwork):
    """The DDPM U-Net of :mod:`diffusion_regimes.models` on images (C, H, W)."""

    name = "unet"
    block = "model"
    needs = "images"

    @classmethod
    def check(cls, where: str, exp_cfg: dict, data_kind: str) -> None:
        super().check(where, exp_cfg, data_kind)
        size = exp_cfg["dataset"].get("size")
        factor = 2 ** (len(exp_cfg["model"]["channel_mult"]) - 1)
        if size and size % factor:
            from . import config_error

            raise config_error(f"{where}.dataset.size", f"the U-Net with {len(exp_cfg['model']['channel_mult'])} "
                               f"resolutions needs a size divisible by {factor}")

    @classmethod
    def input_shape(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) != 3:
            raise ValueError(f"the U-Net takes images (C, H, W), not samples of shape {tuple(shape)}")
        return tuple(shape)

    @classmethod
    def build_network(cls, settings: dict, shape: tuple[int, ...]):
        from ..models import build_unet

        factor = 2 ** (len(settings["channel_mult"]) - 1)
        if shape[1] % factor or shape[2] % factor:
            from ..errors import InputError

            raise InputError(f"the U-Net with {len(settings['channel_mult'])} resolutions (model.channel_mult) needs "
                             f"image sides divisible by {factor}; the data are {shape[1]}x{shape[2]}: set "
                             f"dataset.size to a multiple of {factor}")
        return build_unet(settings, shape[0])


@register
class MLP(TrainedNetwork):
    """The residual MLP of :mod:`diffusion_regimes.models` on flat vectors (d,)."""

    name = "mlp"
    block = "mlp"

    @classmethod
    def input_shape(cls, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape),)

    @classmethod
    def build_network(cls, settings: dict, shape: tuple[int, ...]):
        from ..models import build_mlp

        return build_mlp(settings, shape[0])
