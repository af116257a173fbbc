import torch

from diffusion_regimes import stages
from diffusion_regimes.data import load_subset
from diffusion_regimes.models import UNet, count_parameters
from diffusion_regimes.training import learning_rate, train_classifier, train_unet

MODEL = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [1],
         "dropout": 0.1}
TRAIN = {"steps": 8, "batch_size": 8, "lr": 1e-3, "lr_decay": 0.5, "lr_decay_epochs": 1, "checkpoint_every": 4}


def test_resumed_training_ends_with_the_same_weights(tmp_path, gen):
    x = torch.randn(20, 64, generator=gen)
    straight, log1 = train_unet(x, (1, 8, 8), MODEL, TRAIN, 7, tmp_path / "a.pt", progress=False)
    train_unet(x, (1, 8, 8), MODEL, {**TRAIN, "steps": 4}, 7, tmp_path / "b.pt", progress=False)
    resumed, log2 = train_unet(x, (1, 8, 8), MODEL, TRAIN, 7, tmp_path / "b.pt", progress=False)
    for (k, v), (_, w) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k
    assert log1.equals(log2) and list(log1["step"]) == list(range(1, 9))


def test_state_of_other_settings_is_not_resumed(tmp_path, gen):
    x = torch.randn(20, 64, generator=gen)
    fresh, _ = train_unet(x, (1, 8, 8), MODEL, {**TRAIN, "lr": 3e-3}, 7, tmp_path / "a.pt", progress=False)
    train_unet(x, (1, 8, 8), MODEL, {**TRAIN, "steps": 4}, 7, tmp_path / "b.pt", progress=False)
    other, log = train_unet(x, (1, 8, 8), MODEL, {**TRAIN, "lr": 3e-3}, 7, tmp_path / "b.pt", progress=False)
    assert all(torch.equal(v, w) for v, w in zip(fresh.state_dict().values(), other.state_dict().values()))
    assert len(log) == TRAIN["steps"]


def test_state_from_other_data_is_not_resumed(tmp_path, gen):
    x = torch.randn(20, 64, generator=gen)
    train_unet(x, (1, 8, 8), MODEL, TRAIN, 7, tmp_path / "s.pt", progress=False)
    y = x + 1.0  # same n, same shape, other data
    fresh, _ = train_unet(y, (1, 8, 8), MODEL, TRAIN, 7, tmp_path / "fresh.pt", progress=False)
    again, _ = train_unet(y, (1, 8, 8), MODEL, TRAIN, 7, tmp_path / "s.pt", progress=False)
    assert all(torch.equal(v, w) for v, w in zip(fresh.state_dict().values(), again.state_dict().values()))


def test_unet_moves_between_dtypes(gen):
    net = UNet(1, 8, (1, 2), 1, (1,), 0.0).to(torch.float64)
    out = net(torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64), torch.rand(2, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (2, 1, 8, 8)


def test_learning_rate_schedule():
    cfg = {"lr": 1e-4, "lr_decay": 0.98, "lr_decay_epochs": 50, "batch_size": 100}
    assert learning_rate(0, cfg, 1000) == 1e-4
    assert learning_rate(499, cfg, 1000) == 1e-4  # epoch 49
    assert abs(learning_rate(500, cfg, 1000) - 0.98e-4) < 1e-12  # epoch 50


def test_paper_unet_size():
    assert abs(count_parameters(UNet(3, 64, (1, 2, 4, 4), 2, (1, 2), 0.1)) - 25.7e6) < 0.1e6


def test_classifier_reaches_threshold_on_digits(tmp_path):
    stages.subset({}, {"data": str(tmp_path / "d.parquet")}, "e", {"source": "sklearn_digits", "classes": [1, 8]}, 0)
    x, labels, _ = load_subset(str(tmp_path / "d.parquet"))
    cfg = {"width": 16, "epochs": 100, "batch_size": 64, "lr": 2e-3, "holdout": 0.2, "noise": 0.05}
    _, acc, n_test = train_classifier(x, labels, (1, 16, 16), cfg, 0, progress=False)
    assert acc >= 0.95 and n_test == 71
