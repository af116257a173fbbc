import math

import numpy as np
import pytest
import torch

from diffusion_regimes import schedule
from diffusion_regimes.io import InputError
from diffusion_regimes.sampling import Sampler


def test_delta_matches_forward_process_variance(gen):
    t = 0.7
    a = torch.randn(20000, 1, generator=gen) * 0.0 + 2.0
    x = a * math.exp(-t) + math.sqrt(schedule.delta(t)) * torch.randn(20000, 1, generator=gen)
    assert float(x.var()) == pytest.approx(1 - math.exp(-2 * t), rel=0.03)
    assert schedule.delta(np.array([0.0]))[0] == 0.0


def test_ddpm_times_are_minus_half_log_alpha_bar():
    betas = np.linspace(1e-4, 2e-2, 1000)
    abar = np.cumprod(1 - betas)
    t = schedule.ddpm_times()
    np.testing.assert_allclose(t, -0.5 * np.log(abar))
    np.testing.assert_allclose(np.exp(-2 * t), abar)  # e^{-t} = sqrt(abar), Delta = 1 - abar
    assert t[0] == pytest.approx(5e-5, rel=1e-3) and t[-1] == pytest.approx(5.0, abs=0.1)
    steps = np.array([1, 17, 500, 1000])
    np.testing.assert_array_equal(schedule.ou_to_ddpm_step(t[steps - 1]), steps)
    got = schedule.gather(t, torch.as_tensor(steps))
    np.testing.assert_allclose(got.numpy(), t[steps - 1].astype(np.float32))


@pytest.mark.parametrize("kind", ["uniform", "log_snr", "ddpm"])
def test_time_grids_decrease_to_their_ends(kind):
    g = schedule.time_grid(kind, 50, None if kind == "ddpm" else 4.0, 1e-3)
    assert len(g) == 51 and np.all(np.diff(g) < 0)
    if kind != "ddpm":
        assert g[0] == pytest.approx(4.0) and g[-1] == pytest.approx(1e-3)
    else:
        np.testing.assert_allclose([g[0], g[-1]], schedule.ddpm_times()[[-1, 0]])


def test_ddpm_step_is_ho_et_al_ancestral_step(gen):
    """On the DDPM grid, the sampler's ddpm step equals Ho et al.'s update with eps = -sqrt(1-abar) F."""
    grid = schedule.ddpm_times()[::-1].copy()
    betas = schedule.ddpm_betas()[::-1]
    abar = schedule.ddpm_alpha_bar()[::-1]
    samp = Sampler(grid, "ddpm")
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    i = 10  # step k = 990 -> 989
    score = lambda y, t: -eps / math.sqrt(1 - abar[i])  # noqa: E731
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    got = samp.step(score, x, i, g1)
    z = torch.randn(x.shape, generator=g2)
    beta = betas[i]
    sigma2 = beta * (1 - abar[i + 1]) / (1 - abar[i])
    want = (x - beta / math.sqrt(1 - abar[i]) * eps) / math.sqrt(1 - beta) + math.sqrt(sigma2) * z
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_branch_time_outside_grid_is_an_input_error():
    samp = Sampler(schedule.time_grid("uniform", 10, 2.0))
    with pytest.raises(InputError, match="raise the sampler's T"):
        samp.snap(np.array([3.0]))
