import math

import pytest
import torch

from diffusion_regimes.networks import EpsilonModel, NetworkScore
from diffusion_regimes.scores import EmpiricalScore, GaussianMixtureScore


def autograd_score(log_density, x, t):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(log_density(x, t).sum(), x)
    return g


@pytest.mark.parametrize("t", [0.05, 0.5, 2.0])
def test_gaussian_mixture_score_is_gradient_of_log_density(gen, t):
    d = 16
    m = torch.randn(d, generator=gen)
    s = GaussianMixtureScore(m, 0.7)
    x = torch.randn(8, d, generator=gen) * 2
    want = autograd_score(s.log_density, x.double(), t)
    torch.testing.assert_close(s(x, t).double(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t", [0.02, 0.3, 3.0])
def test_empirical_score_is_gradient_of_log_density(gen, t):
    a = torch.randn(37, 10, generator=gen)
    s = EmpiricalScore(a, block=8)  # several blocks and a ragged last one
    x = torch.randn(6, 10, generator=gen)
    want = autograd_score(s.log_density_autograd, x.double(), t)
    torch.testing.assert_close(s(x, t).double(), want, rtol=1e-3, atol=1e-3 / math.sqrt(s.n))
    torch.testing.assert_close(s.log_density(x, t).double(), s.log_density_autograd(x.double(), t),
                               rtol=1e-5, atol=1e-4)


def test_empirical_blocking_does_not_change_results(gen):
    a = torch.randn(500, 32, generator=gen)
    x = torch.randn(20, 32, generator=gen)
    full, blocked = EmpiricalScore(a, block=10_000), EmpiricalScore(a, block=33)
    torch.testing.assert_close(full(x, 0.1), blocked(x, 0.1), rtol=1e-4, atol=1e-4)
    i1, d1 = full.nearest(x, 0.1)
    i2, d2 = blocked.nearest(x, 0.1)
    brute = ((x[:, None] - a[None] * math.exp(-0.1)) ** 2).sum(-1)
    assert torch.equal(i1, brute.argmin(1)) and torch.equal(i2, i1)
    torch.testing.assert_close(d2, brute.min(1).values, rtol=1e-4, atol=1e-3)


def test_network_score_is_minus_eps_over_sqrt_delta(gen):
    class Eps(torch.nn.Module):  # a raw network: sees the noise level c_noise = time_scale * t
        def forward(self, x, c_noise):
            return 0.5 * x + c_noise[:, None, None, None]

    x = torch.randn(7, 12, generator=gen)
    s = NetworkScore(EpsilonModel(Eps(), (3, 2, 2), time_scale=10.0), batch_size=3)
    t = 0.4
    want = -(0.5 * x + 10.0 * t) / math.sqrt(1 - math.exp(-2 * t))
    torch.testing.assert_close(s(x, t), want)
