import math

import numpy as np
import pytest
import torch

from diffusion_regimes import stages
from diffusion_regimes.data import load_subset
from diffusion_regimes.io import read_metadata, read_table
from diffusion_regimes.spectrum import covariance_eigenvalues, covariance_trace


@pytest.mark.parametrize("n, d", [(400, 60), (60, 400)])
@pytest.mark.parametrize("method", ["dense", "iterative"])
def test_spectrum_against_numpy_eigvalsh(gen, n, d, method):
    x = torch.randn(n, d, generator=gen) * torch.linspace(0.1, 3.0, d) + torch.linspace(-2, 2, d)
    ref = np.linalg.eigvalsh(np.cov(x.double().numpy().T, bias=True))[::-1]
    got = covariance_eigenvalues(x, top=8, method=method, block=17)
    np.testing.assert_allclose(got, ref[:8], rtol=1e-5)
    assert covariance_trace(x, block=17) == pytest.approx(ref.sum(), rel=1e-10)


def test_spectrum_of_known_synthetic_data_at_d_12288(gen):
    """Data X = Q diag(s) W^T with orthonormal centred Q (n x k) and W (d x k): the
    covariance has exactly the eigenvalues s^2 / n (and zeros), at the paper's d."""
    n, d, k = 1500, 12288, 40
    q = torch.randn(n, k, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(q - q.mean(0))  # orthonormal, centred columns
    w, _ = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))
    s = torch.linspace(200.0, 20.0, k, dtype=torch.float64)
    x = ((q * s) @ w.T).float() + 5.0  # a constant offset: the mean is removed
    want = (s**2 / n).numpy()
    got = covariance_eigenvalues(x, top=10)  # auto: iterative above 4096
    np.testing.assert_allclose(got, want[:10], rtol=1e-4)
    assert covariance_trace(x) == pytest.approx(want.sum(), rel=1e-4)


def test_spectrum_stage_records_channel0_and_choice(tmp_path):
    data = tmp_path / "data.parquet"
    stages.subset({}, {"data": str(data), "reference": str(tmp_path / "r.parquet")}, "e",
                  {"source": "sklearn_digits", "classes": [1, 8], "size": 16}, 0)
    out = tmp_path / "s.parquet"
    stages.spectrum({"data": str(data)}, {"spectrum": str(out)}, {"top": 5, "method": "auto", "lambda_from": "all"})
    table, meta = read_table(out)
    x, _, _ = load_subset(str(data))
    ref = np.linalg.eigvalsh(np.cov(x.double().numpy().T, bias=True))[::-1]
    np.testing.assert_allclose(table["eigenvalue"], ref[:5], rtol=1e-6)
    assert meta["Lambda"] == pytest.approx(ref[0]) and meta["t_S"] == pytest.approx(0.5 * math.log(ref[0]))
    assert meta["lambda_from"] == "all" and meta["Lambda_channel0"] == meta["Lambda_all"]  # one channel
    assert read_metadata(out)["config"]["top"] == 5


def test_channel0_spectrum_of_colour_images(tmp_path, gen):
    import pyarrow as pa

    from diffusion_regimes.io import make_metadata, write_table

    n, shape = 500, (3, 4, 4)
    x = torch.randn(n, *shape, generator=gen)
    x[:, 0] *= 1.5  # Lambda over channel 0 is about 2.25 (> 1: the spectrum stage refuses Lambda <= 1)
    x[:, 1:] += 3.0 * torch.randn(n, 1, 1, 1, generator=gen)  # channels 1, 2 share a strong mode
    flat = x.flatten(1).numpy()
    table = pa.table({"label": pa.array(np.zeros(n, dtype=np.int8)), "source_index": pa.array(np.arange(n)),
                      "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), 48)})
    data = tmp_path / "data.parquet"
    write_table(table, data, make_metadata("subset", {}, 0, {"n": n, "d": 48, "shape": list(shape),
                                                            "source": "cifar10", "mean": [0, 0, 0]}))
    for which in ["all", "channel0"]:
        out = tmp_path / f"{which}.parquet"
        stages.spectrum({"data": str(data)}, {"spectrum": str(out)}, {"top": 3, "method": "dense",
                                                                      "lambda_from": which})
        meta = read_metadata(out)
        ref0 = np.linalg.eigvalsh(np.cov(flat[:, :16].T, bias=True))[-1]
        assert meta["Lambda_channel0"] == pytest.approx(ref0, rel=1e-5)
        assert meta["Lambda_all"] > 10 * meta["Lambda_channel0"]
        assert meta["Lambda"] == meta["Lambda_all" if which == "all" else "Lambda_channel0"]
