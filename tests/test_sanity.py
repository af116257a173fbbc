"""The data's pixel convention (``pixel_range``, ``centre``), the split seed, and the sanity
check of a network score (:mod:`diffusion_regimes.sanity`)."""

import numpy as np
import pytest
import torch

from diffusion_regimes import sanity
from diffusion_regimes.data import load_subset, make_subset
from diffusion_regimes.errors import InputError
from diffusion_regimes.scores import EmpiricalScore, GaussianMixtureScore
from diffusion_regimes.seeding import generator
from diffusion_regimes.stages.data import subset as subset_stage

DIGITS = {"source": "sklearn_digits", "classes": [1, 8], "size": 16, "holdout": 0.5}


def digits(**convention) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(training x, reference x, metadata) of the digits subset in a pixel convention."""
    table, meta, ref, _ = make_subset({**DIGITS, **convention}, generator(0), generator(1))
    x = torch.as_tensor(np.stack(table.column("x").to_numpy(zero_copy_only=False)))
    x_ref = torch.as_tensor(np.stack(ref.column("x").to_numpy(zero_copy_only=False)))
    return x, x_ref, meta


def test_pixel_conventions_are_one_affine_map_of_the_same_images():
    x, x_ref, meta = digits()
    y, y_ref, meta_y = digits(pixel_range=[-1, 1], centre=False)
    assert meta_y["pixel_range"] == [-1.0, 1.0] and meta_y["centred"] is False and meta_y["mean"] == [0.0]
    assert meta["pixel_range"] == [0.0, 1.0] and meta["centred"] is True
    raw = x + torch.tensor(meta["mean"])  # pixels in [0, 1]
    assert torch.allclose(y, 2 * raw - 1, atol=1e-6) and y.min() >= -1 and y.max() <= 1
    for conv, other in ((((-1.0, 1.0), False), y), (((0.0, 1.0), True), x)):
        assert torch.allclose(sanity.recode(x, meta, x, conv), other, atol=1e-5)
        assert torch.allclose(sanity.recode(y, meta_y, y, conv), other, atol=1e-5)
    assert torch.allclose(sanity.recode(x_ref, meta, x, ((-1.0, 1.0), False)), y_ref, atol=1e-5)
    # Lambda grows as the square of the range; centring does not change a covariance
    top = [float(torch.linalg.eigvalsh(torch.cov(v.T))[-1]) for v in (x, y)]
    assert top[1] == pytest.approx(4 * top[0], rel=1e-4)
    with pytest.raises(InputError, match="pixel_range .* below the second"):
        digits(pixel_range=[1, -1])


def test_split_seed_draws_the_same_split_whatever_the_experiment_is_called(tmp_path):
    def split(exp: str, **extra) -> tuple[set, set]:
        out = {"data": str(tmp_path / f"{exp}_data.parquet"), "reference": str(tmp_path / f"{exp}_ref.parquet")}
        subset_stage({}, out, exp, {**DIGITS, "per_class": 60, **extra}, 0)
        _, _, meta = load_subset(out["data"])
        import pyarrow.parquet as pq

        return ({int(i) for i in pq.read_table(out["data"]).column("source_index").to_numpy()},
                {int(i) for i in pq.read_table(out["reference"]).column("source_index").to_numpy()})

    a, b = split("first", split_seed=7), split("renamed", split_seed=7)
    assert a == b and not a[0] & a[1]
    c, d = split("first"), split("renamed")  # by name: another draw
    assert c != d and len(c[0] & d[1]) > 0


def test_a_model_that_denoises_passes_and_one_on_another_scale_stops_with_one_line():
    torch.manual_seed(0)
    d = 16
    m = torch.full((d,), 1.0)
    labels = torch.randint(0, 2, (400,))
    x = (2.0 * labels[:, None] - 1) * m + torch.randn(400, d)
    exact = GaussianMixtureScore(m, 1.0)
    table, res = sanity.check(exact, x, x[:100], {}, "gm/exact", 0, images=False)
    # the exact score: 1/(1 + s^2) on each class's directions, less across the two centres
    assert res["passed"] and res["ratio_training"] < 1 and res["level"] == sanity.LEVELS[0]
    assert table[(table["set"] == "training") & (table["level"] == 0.5)]["ratio"].iloc[0] < 0.9
    assert set(table["set"]) == {"training", "reference"} and list(table["level"].unique()) == list(sanity.LEVELS)
    assert (table["ratio_se"] > 0).all() and (table["points"] == [256, 256, 100, 100]).all()

    def shifted(y, t):  # the exact score of data that sit 8 units away along every coordinate
        return exact(y - 8.0, t)

    broken = r"gm/shifted: denoising 256 training points .*max_ratio 1.1\): the model is broken, undertrained"
    with pytest.raises(InputError, match=broken) as e:
        sanity.check(shifted, x, None, {}, "gm/shifted", 0, images=False)
    assert "\n" not in str(e.value)
    table, res = sanity.check(shifted, x, None, {}, "gm/shifted", 0, images=False, max_ratio=1e9)
    assert res["passed"] and res["ratio_training"] > 1.5


def test_the_check_names_the_pixel_convention_a_model_was_trained_on():
    x, x_ref, meta = digits()
    y, y_ref, meta_y = digits(pixel_range=[-1, 1], centre=False)
    trained_on_y = EmpiricalScore(y)  # a model of the [-1, 1] uncentred images (it memorises them)
    with pytest.raises(InputError, match=r"with pixels in \[-1.0, 1.0\] uncentred: the model was trained on that "
                       r"scale; set dataset.pixel_range: \[-1.0, 1.0\] and dataset.centre: false") as e:
        sanity.check(trained_on_y, x, x_ref, meta, "digits/external", 0, images=True)
    assert "\n" not in str(e.value)
    table, res = sanity.check(trained_on_y, y, y_ref, meta_y, "digits/external", 0, images=True)
    assert res["passed"] and res["ratio_training"] < 0.05  # training points: it memorised them
    assert res["ratio_reference"] > res["ratio_training"]
    own = table[table["own"]]
    assert set(own["convention"]) == {"[-1.0, 1.0] uncentred"}
    assert set(table[~table["own"]]["convention"]) == {"[0.0, 1.0] centred", "[0.0, 1.0] uncentred",
                                                       "[-1.0, 1.0] centred"}
