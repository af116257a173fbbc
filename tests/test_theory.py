import math

import numpy as np
import pytest

from diffusion_regimes import theory


def test_phi_limits():
    assert theory.gm_phi(20.0, 16.0, 1.0) == pytest.approx(0.5, abs=1e-6)
    assert theory.gm_phi(0.01, 16.0, 1.0) == pytest.approx(1.0, abs=1e-6)
    # at t_S = 1/2 log Lambda, phi -> 0.77520 as d -> infinity (the level of the measured t_S)
    d = 10**8
    t_s = 0.5 * math.log(theory.gm_lambda(d, 1.0, 1.0))
    assert theory.gm_phi(t_s, math.sqrt(d), 1.0) == pytest.approx(theory.PHI_AT_T_S, abs=2e-4)
    assert theory.PHI_AT_T_S == pytest.approx(0.7752002453966635, abs=1e-12)  # scipy quad of the integral


def test_phi_matches_direct_integral():
    m, s, t = 16.0, 1.0, 2.7
    mt, gam = m * math.exp(-t), 1 - math.exp(-2 * t) + s**2 * math.exp(-2 * t)
    y = np.linspace(-30, 30, 200001)
    gp = np.exp(-(y - mt) ** 2 / (2 * gam)) / math.sqrt(2 * math.pi * gam)
    gm = np.exp(-(y + mt) ** 2 / (2 * gam)) / math.sqrt(2 * math.pi * gam)
    direct = 0.5 * np.trapezoid((gp**2 + gm**2) / (gp + gm), y)
    assert theory.gm_phi(t, m, s) == pytest.approx(direct, abs=1e-8)


def test_collapse_time_is_zero_of_f():
    n, d, s = 2000, 256, 1.0
    tc = theory.gm_collapse_time(n, d, s)
    assert theory.gm_excess_entropy(tc, n, d, s) == pytest.approx(0.0, abs=1e-12)
    assert theory.gm_excess_entropy(50.0, n, d, s) == pytest.approx(math.log(n) / d)


def test_crossing_time_interpolates():
    t = np.array([1.0, 2.0, 3.0])
    assert theory.crossing_time(t, np.array([1.0, 0.5, 0.0]), 0.75) == pytest.approx(1.5)
    assert math.isnan(theory.crossing_time(t, np.array([1.0, 0.9, 0.8]), 0.1))


def test_mixture_collapse_time_at_infinite_and_finite_d():
    """d -> infinity: 1/2 log(1 + s^2/(n^{2/d} - 1)); at finite d the mixing entropy of the two
    classes stays: 1/2 log(1 + s^2/((n/2)^{2/d} - 1))."""
    assert theory.gm_collapse_time(2000, 256, 1.0) == pytest.approx(1.427, abs=1e-3)
    assert theory.gm_collapse_time(2000, 256, 1.0, classes=2) == pytest.approx(1.473, abs=1e-3)
    assert theory.alpha(2000, 256) == pytest.approx(math.log(2000) / 256)
