import numpy as np
import pytest
import torch

from diffusion_regimes import stages, training
from diffusion_regimes.classifier import train_classifier
from diffusion_regimes.cli import main as cli_main
from diffusion_regimes.data import load_subset
from diffusion_regimes.errors import InputError
from diffusion_regimes.models import UNet, build_classifier, count_parameters
from diffusion_regimes.networks import EpsilonModel, NetworkScore, build_model
from diffusion_regimes.seeding import Stream, global_torch_seed
from diffusion_regimes.training import learning_rate, train_network

MODEL = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [1],
         "dropout": 0.1}
TRAIN = {"steps": 8, "batch_size": 8, "lr": 1e-3, "lr_decay": 0.5, "lr_decay_epochs": 1, "checkpoint_every": 4}


def _same_weights(a, b):
    return all(torch.equal(v, w) for v, w in zip(a.state_dict().values(), b.state_dict().values()))


def train(x, path, **overrides):
    model, log, _ = train_network(x, "unet", MODEL, (1, 8, 8), {**TRAIN, **overrides}, 7, path, progress=False)
    return model, log


@pytest.mark.parametrize("ema", [None, 0.9])
def test_killed_training_resumes_to_the_same_weights(tmp_path, gen, monkeypatch, ema):
    x = torch.randn(20, 64, generator=gen)
    straight, log1 = train(x, tmp_path / "a.pt", ema=ema)
    real = training.learning_rate

    def killed_at_step_6(step, cfg, n):  # dies mid-run, two steps after the checkpoint at step 4
        if step == 6:
            raise KeyboardInterrupt
        return real(step, cfg, n)

    monkeypatch.setattr(training, "learning_rate", killed_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        train(x, tmp_path / "b.pt", ema=ema)
    monkeypatch.setattr(training, "learning_rate", real)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 4
    resumed, log2, info = train_network(x, "unet", MODEL, (1, 8, 8), {**TRAIN, "ema": ema}, 7, tmp_path / "b.pt",
                                        progress=False)
    assert info["resumed_from"] == 4 and info["ema"] == ema
    assert _same_weights(straight, resumed)
    assert log1.equals(log2) and list(log1["step"]) == list(range(1, 9))


def test_ema_weights_are_the_average(tmp_path, gen):
    x = torch.randn(20, 64, generator=gen)
    raw, _ = train(x, tmp_path / "a.pt", steps=2)  # raw weights w1, w2 after steps 1 and 2
    one, _ = train(x, tmp_path / "c.pt", steps=1)
    avg, _ = train(x, tmp_path / "b.pt", steps=2, ema=0.9)
    with global_torch_seed(7, Stream.INIT):
        init = build_model("unet", MODEL, (1, 8, 8))
    for w0, w1, w2, e in zip(init.parameters(), one.parameters(), raw.parameters(), avg.parameters()):
        expected = 0.9 * (0.9 * w0 + 0.1 * w1) + 0.1 * w2  # e_k = decay e_{k-1} + (1 - decay) w_k, e_0 = w0
        assert torch.allclose(e, expected, atol=1e-6)


def test_one_step_decreases_the_loss_on_a_fixed_batch(gen):
    with global_torch_seed(0):
        net = EpsilonModel(UNet(1, 8, (1, 2), 1, (1,), 0.0), (1, 8, 8))
    a, eps = torch.randn(16, 64, generator=gen), torch.randn(16, 64, generator=gen)
    t = torch.rand(16, generator=gen) * 2 + 0.05
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    before = net.loss(a, t, eps)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = net.loss(a, t, eps)
    assert after < before


def test_corrupt_resume_state_is_a_one_line_error(tmp_path, gen):
    (tmp_path / "s.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError) as err:
        train(torch.randn(20, 64, generator=gen), tmp_path / "s.pt")
    assert "\n" not in str(err.value) and "delete it" in str(err.value)


def test_state_of_other_settings_is_not_resumed(tmp_path, gen):
    x = torch.randn(20, 64, generator=gen)
    fresh, _ = train(x, tmp_path / "a.pt", lr=3e-3)
    train(x, tmp_path / "b.pt", steps=4)
    other, log = train(x, tmp_path / "b.pt", lr=3e-3)
    assert _same_weights(fresh, other)
    assert len(log) == TRAIN["steps"]


def test_state_from_other_data_is_not_resumed(tmp_path, gen):
    x = torch.randn(20, 64, generator=gen)
    train(x, tmp_path / "s.pt")
    y = x + 1.0  # same n, same shape, other data
    fresh, _ = train(y, tmp_path / "fresh.pt")
    again, _ = train(y, tmp_path / "s.pt")
    assert _same_weights(fresh, again)


def test_bf16_network_score_is_close_to_fp32(gen):
    with global_torch_seed(0):
        net = EpsilonModel(UNet(1, 8, (1, 2), 1, (1,), 0.0), (1, 8, 8))
    x = torch.randn(6, 64, generator=gen)
    f32 = NetworkScore(net, batch_size=4)(x, 0.5)
    b16 = NetworkScore(net, batch_size=4, precision="bf16")(x, 0.5)
    assert b16.dtype == torch.float32 and f32.shape == b16.shape
    assert (b16 - f32).norm() < 0.05 * f32.norm()


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


def test_describe_model_prints_the_paper_size(capsys):
    assert cli_main(["describe-model", "--config", "config/paper.yaml", "--experiment", "cifar2"]) == 0
    out = capsys.readouterr().out
    assert "U-Net parameters: 25,636,483" in out and "(25.64 M)" in out and "resnet18" in out
    assert "down.3.1   Attention                 128x16x16" in out


def test_describe_model_unknown_experiment_is_one_line(capsys):
    assert cli_main(["describe-model", "--config", "config/config.yaml", "--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has ['digits', 'gmm']" in err


@pytest.mark.slow
def test_classifier_reaches_threshold_on_digits(tmp_path):
    stages.subset({}, {"data": str(tmp_path / "d.parquet"), "reference": str(tmp_path / "r.parquet")}, "e",
                  {"source": "sklearn_digits", "classes": [1, 8]}, 0)  # holdout 0: all 356 images
    x, labels, _ = load_subset(str(tmp_path / "d.parquet"))
    cfg = {"arch": "small_cnn", "width": 16, "epochs": 100, "batch_size": 64, "lr": 2e-3, "holdout": 0.2,
           "noise": 0.05}
    _, acc, n_test = train_classifier(x, labels, (1, 16, 16), cfg, 0, progress=False)
    assert acc >= 0.95 and n_test == 71
    resnet = {**cfg, "arch": "resnet18", "epochs": 10, "lr": 1e-3}
    net, acc, _ = train_classifier(x, labels, (1, 16, 16), resnet, 0, progress=False)
    assert acc >= 0.95 and count_parameters(net) == count_parameters(build_classifier(resnet, (1, 16, 16)))


def test_compiled_training_runs_and_matches_eager(tmp_path, gen, monkeypatch):
    """train.compile goes through torch.compile (its eager backend here, to stay fast): the
    compiled module is passed to the wrapper's loss, never tested for truth (an
    OptimizedModule has no len())."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kw: real(module, backend="eager"))
    x = torch.randn(20, 64, generator=gen)
    compiled, log_c = train(x, tmp_path / "c.pt", steps=3, compile=True)
    eager, log_e = train(x, tmp_path / "e.pt", steps=3)
    assert list(log_c["step"]) == [1, 2, 3]
    for a, b in zip(compiled.state_dict().values(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["ddpm", "ddpm_continuous", "uniform", "log_snr"])
def test_training_time_distributions(kind):
    from diffusion_regimes.schedule import ddpm_times, training_times

    times = ddpm_times()
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = training_times(kind, u)
    assert t.dtype == torch.float32 and t.shape == u.shape
    assert torch.equal(t, torch.as_tensor(training_times(kind, u.numpy())))  # numpy and torch agree
    assert t.min() >= times[0] * (1 - 1e-6) and t.max() <= times[-1] * (1 + 1e-6)
    above = (t > 2.77).double().mean().item()  # the mixture's t_S at d = 256
    expected = {"ddpm": (times > 2.77).mean(), "ddpm_continuous": (times > 2.77).mean(),
                "uniform": (times[-1] - 2.77) / (times[-1] - times[0]),
                "log_snr": (np.log(np.expm1(2 * times[-1])) - np.log(np.expm1(5.54)))
                / (np.log(np.expm1(2 * times[-1])) - np.log(np.expm1(2 * times[0])))}[kind]
    assert above == pytest.approx(expected, abs=0.005)  # 200 000 draws: s.e. about 0.001
    on_grid = np.isin(t.numpy(), times.astype(np.float32)).mean()
    assert on_grid == 1.0 if kind == "ddpm" else on_grid < 0.01


def test_training_with_continuous_times(tmp_path, gen, monkeypatch):
    """The continuous-time path: the loss sees times off the DDPM grid, a killed run resumes to
    the same weights, and a state of the discrete recipe is not resumed by it."""
    from diffusion_regimes.schedule import ddpm_times

    seen = []
    real_loss = EpsilonModel.loss

    def spy(self, a, t, eps, *args, **kwargs):
        seen.append(t.detach().clone())
        return real_loss(self, a, t, eps, *args, **kwargs)

    monkeypatch.setattr(EpsilonModel, "loss", spy)
    x = torch.randn(20, 64, generator=gen)
    straight, _ = train(x, tmp_path / "a.pt", times="uniform")
    t = torch.cat(seen).numpy()
    assert len(t) == TRAIN["steps"] * TRAIN["batch_size"]
    assert not np.isin(t, ddpm_times().astype(np.float32)).any()
    discrete, _ = train(x, tmp_path / "d.pt")
    assert not _same_weights(straight, discrete)
    resumed, _, info = train_network(x, "unet", MODEL, (1, 8, 8), {**TRAIN, "steps": 4, "times": "uniform"}, 7,
                                     tmp_path / "b.pt", progress=False)
    resumed, _, info = train_network(x, "unet", MODEL, (1, 8, 8), {**TRAIN, "times": "uniform"}, 7,
                                     tmp_path / "b.pt", progress=False)
    assert info["resumed_from"] == 4 and _same_weights(straight, resumed)
    _, _, info = train_network(x, "unet", MODEL, (1, 8, 8), {**TRAIN, "times": "log_snr"}, 7, tmp_path / "d.pt",
                               progress=False)
    assert info["resumed_from"] == 0  # the ddpm state d.pt (step 8) was made with other times


def test_bf16_on_a_cpu_without_native_bf16_warns(tmp_path, caplog, monkeypatch):
    from diffusion_regimes import device

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert device.cpu_has_native_bf16(str(info)) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert device.cpu_has_native_bf16(str(info)) is True
    assert device.cpu_has_native_bf16(str(tmp_path / "absent")) is None
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level("WARNING", logger="diffusion_regimes"):
        assert device.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # kept: part of the result
        assert device.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert len(caplog.records) == 1 and "set train.precision" in caplog.records[0].getMessage()
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    caplog.clear()
    device.resolve_precision("bf16", torch.device("cpu"))
    assert not caplog.records
