"""A toy solvable data model registered from outside the package, as a user would: one
class with its schema entry. Two unit-variance Gaussians at +-m e_1 in d dimensions."""

import numpy as np
import torch

from diffusion_regimes.datamodels import DataModel, Subset, register
from diffusion_regimes.schedule import speciation_time
from diffusion_regimes.scores import MixtureScore
from diffusion_regimes.theory import gm_phi


@register
class AxisMixture(DataModel):
    name = "axis_mixture"
    kind = "solvable"
    schema = {"additionalProperties": False, "required": ["source", "d", "n"],
              "properties": {"d": {"type": "integer", "minimum": 2}, "n": {"type": "integer", "minimum": 2},
                             "m": {"type": "number", "exclusiveMinimum": 0, "default": 4.0}}}

    @classmethod
    def sample(cls, dataset, generator):
        d, n, m = dataset["d"], dataset["n"], dataset["m"]
        labels = (torch.arange(n) % 2)[torch.randperm(n, generator=generator)]
        x = torch.randn(n, d, generator=generator)
        x[:, 0] += m * (2 * labels - 1)
        meta = {"shape": [d], "mean": [0.0], "classes": ["-", "+"], "source": cls.name, "m": m}
        return Subset(x, labels.numpy(), np.arange(n, dtype=np.int64), meta)

    def exact_score(self):
        centres = torch.zeros(2, self.meta["d"])
        centres[:, 0] = torch.tensor([-1.0, 1.0]) * self.meta["m"]
        return MixtureScore(centres, 1.0)

    def classify(self, x):
        return (x[:, 0] > 0).to(torch.int64)

    def theory(self, t):
        lam = 1.0 + self.meta["m"] ** 2
        return ({"phi": gm_phi(t, self.meta["m"], 1.0), "f": np.full_like(t, np.nan)},
                {"Lambda_population": lam, "t_S_population": speciation_time(lam)})
