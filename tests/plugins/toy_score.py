"""A toy score model registered from outside the package, as a user would: one class. A
small noise-predicting network (two linear layers on the state and the noise level), trained
by the workflow like the built-in ones, so that cloning, collapse, U-turns and the
memorisation study all run on it.

The module is imported when the workflow's DAG is evaluated (to read the schema of its
config block), so torch is imported inside the methods only."""

from diffusion_regimes.scoremodels import TrainedNetwork, register


@register
class ToyNet(TrainedNetwork):
    name = "toy_net"
    block = "toy_net"
    schema = {"additionalProperties": False,
              "properties": {"width": {"type": "integer", "minimum": 1, "default": 32}}}

    @classmethod
    def input_shape(cls, shape):
        import math

        return (math.prod(shape),)

    @classmethod
    def build_network(cls, settings, shape):
        import torch
        from torch import nn

        class Toy(nn.Module):
            def __init__(self, d: int, width: int):
                super().__init__()
                self.inp = nn.Linear(d + 1, width)
                self.out = nn.Linear(width, d)

            def forward(self, x, c_noise):
                h = torch.cat([x, (c_noise / 1000.0)[:, None]], 1)
                return self.out(torch.tanh(self.inp(h)))

        return Toy(shape[0], settings["width"])
