"""The reference curves from the data (references.py) against the closed form of the
two-Gaussian mixture: phi_G (class-conditional Gaussians) everywhere, phi_H (training
posterior at noised fresh points) above the collapse time."""

import numpy as np
import torch

from diffusion_regimes import theory
from diffusion_regimes.references import gaussian_phi_rows, heldout_phi_rows, reference_curves


def mixture(n: int, d: int, m_norm: float, sigma: float, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """n points of (1/2) N(m, sigma^2 I) + (1/2) N(-m, sigma^2 I), m = m_norm e_1, and their classes."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    x = sigma * torch.randn(n, d, generator=g)
    x[:, 0] += m_norm * (2 * labels - 1).float()
    return x, labels.numpy()


def within(rows: np.ndarray, expected: np.ndarray, slack: float) -> None:
    phi, se = rows.mean(1), rows.std(1, ddof=1) / np.sqrt(rows.shape[1])
    assert np.all(np.abs(phi - expected) <= 3 * se + slack), (phi, expected, se)


def test_gaussian_reference_is_the_mixture_closed_form():
    d, m_norm, sigma = 16, 2.0, 1.0
    x, labels = mixture(12000, d, m_norm, sigma, 0)
    times = np.array([0.1, 0.4, 0.7, 1.0, 1.5, 2.5])
    rows = gaussian_phi_rows(x, labels, times, 3000, seed=1)
    within(rows, theory.gm_phi(times, m_norm, sigma), 0.01)


def test_heldout_reference_is_the_closed_form_above_the_collapse_time():
    d, m_norm, sigma = 8, 2.0, 1.0
    x, labels = mixture(6000, d, m_norm, sigma, 0)
    fresh, _ = mixture(2000, d, m_norm, sigma, 1)
    t_C = theory.gm_collapse_time(6000, d, sigma)
    times = np.array([0.4, 0.7, 1.0, 1.5, 2.5])
    assert times.min() > 3 * t_C
    rows = heldout_phi_rows(x, labels, fresh, times, 3000, seed=2)
    within(rows, theory.gm_phi(times, m_norm, sigma), 0.015)
    # below t_C the empirical posterior sits on single training points: phi_H -> 1 (collapse)
    assert heldout_phi_rows(x, labels, fresh, np.array([1e-3]), 500, seed=2).mean() > 0.99


def test_reference_crossings_come_with_standard_errors():
    d, m_norm, sigma = 16, 2.0, 1.0
    x, labels = mixture(4000, d, m_norm, sigma, 0)
    fresh, _ = mixture(1000, d, m_norm, sigma, 1)
    times = np.linspace(0.05, 2.5, 40)
    columns, results = reference_curves(x, labels, fresh, times, {"n_samples": 2000, "n_bootstrap": 100}, seed=3)
    exact = theory.crossing_time(times, theory.gm_phi(times, m_norm, sigma), theory.PHI_AT_T_S)
    for name in ("gaussian", "heldout"):
        assert columns[f"phi_{name}"].shape == times.shape and np.all(columns[f"phi_{name}_se"] > 0)
        se = results[f"t_S_{name}_se"]
        assert 0 < se < 0.1 and abs(results[f"t_S_{name}"] - exact) < 3 * se + 0.02, (name, results, exact)
