"""A toy solvable data model registered from outside the package, as a user would: one
class with its schema entry. Two unit-variance Gaussians at +-m e_1 in d dimensions.

The module is imported when the workflow's DAG is evaluated (to read the schema entry),
so it imports torch and the package's numerical modules inside its methods: evaluating
the DAG stays free of torch."""

import numpy as np

from diffusion_regimes.datamodels import DataModel, Subset, register


@register
class AxisMixture(DataModel):
    name = "axis_mixture"
    kind = "solvable"
    schema = {"additionalProperties": False, "required": ["source", "d", "n"],
              "properties": {"d": {"type": "integer", "minimum": 2}, "n": {"type": "integer", "minimum": 2},
                             "m": {"type": "number", "exclusiveMinimum": 0, "default": 4.0}}}

    @classmethod
    def sample(cls, dataset, generator):
        import torch

        d, n, m = dataset["d"], dataset["n"], dataset["m"]
        labels = (torch.arange(n) % 2)[torch.randperm(n, generator=generator)]
        x = torch.randn(n, d, generator=generator)
        x[:, 0] += m * (2 * labels - 1)
        meta = {"shape": [d], "mean": [0.0], "classes": ["-", "+"], "source": cls.name, "m": m}
        return Subset(x, labels.numpy(), np.arange(n, dtype=np.int64), meta)

    def exact_score(self):
        import torch

        from diffusion_regimes.scores import MixtureScore

        centres = torch.zeros(2, self.meta["d"])
        centres[:, 0] = torch.tensor([-1.0, 1.0]) * self.meta["m"]
        return MixtureScore(centres, 1.0)

    def classify(self, x):
        return (x[:, 0] > 0).long()

    def theory(self, t):
        from diffusion_regimes.schedule import speciation_time
        from diffusion_regimes.theory import gm_phi

        lam = 1.0 + self.meta["m"] ** 2
        return ({"phi": gm_phi(t, self.meta["m"], 1.0), "f": np.full_like(t, np.nan)},
                {"Lambda_population": lam, "t_S_population": speciation_time(lam)})
