"""Training of noise-predicting networks and of the class classifier.

Denoising score matching as in DDPM: a DDPM step k uniform in 1..1000, OU time
``t_k = -1/2 log abar_k``, ``x_t = a e^{-t} + sqrt(Delta_t) eps``, loss
``|eps_theta(x_t, t) - eps|^2`` (mean over pixels). Adam; the learning rate is
multiplied by ``lr_decay`` every ``lr_decay_epochs`` epochs (the paper: 0.98
every 50 epochs). Optional exponential moving average (EMA) of the weights.

Speed (:mod:`diffusion_regimes.device`): on a GPU, bf16 autocast, channels_last
and, when asked, ``torch.compile``; the data live on the device when they fit.
Batch indices, times and noise are drawn on the CPU from the run's generator,
so the data stream is the same on every device.

Resumable: every ``checkpoint_every`` steps the full state (model, optimiser,
EMA, step, generator and RNG states, loss log) is written atomically to
``state_path``, a file that is not a declared output; a rerun resumes from it
and, on the CPU, ends with the same weights as an uninterrupted run. The
learning rate is a function of the step, so it resumes with it. A state made
from other data or other hyperparameters (its fingerprint differs) is not
resumed; ``steps``, ``checkpoint_every`` and the speed switches
(``compile``, ``channels_last``) may change between runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .device import (
    autocast,
    place_data,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
    rng_states,
    set_rng_states,
    to_layout,
)
from .io import InputError, load_checkpoint, save_checkpoint
from .models import build_classifier, build_unet
from .schedule import ddpm_times
from .seeding import derive_seed

log_ = logging.getLogger("diffusion_regimes")

# train keys that do not change the result (they may differ between a run and its resumption)
_SPEED_KEYS = ("steps", "checkpoint_every", "compile", "channels_last")


def learning_rate(step: int, cfg: dict, n: int) -> float:
    """Learning rate at a 0-based step: ``lr * lr_decay ** floor(epoch / lr_decay_epochs)``."""
    epoch = step * cfg["batch_size"] // max(n, 1)
    return cfg["lr"] * cfg["lr_decay"] ** (epoch // cfg["lr_decay_epochs"])


def dsm_loss(model: nn.Module, a: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, shape: tuple[int, int, int],
             precision: str = "fp32", channels_last: bool = False) -> torch.Tensor:
    """Denoising score-matching loss: mean of ``|eps_theta(a e^{-t} + sqrt(Delta_t) eps, t) - eps|^2``
    over a batch of clean data a (B, d), OU times t (B,) and noise eps (B, d)."""
    xt = a * torch.exp(-t)[:, None] + torch.sqrt(-torch.expm1(-2 * t))[:, None] * eps
    with autocast(a.device, precision):
        pred = model(to_layout(xt.view(-1, *shape), channels_last), t)
    return F.mse_loss(pred.float(), eps.view(-1, *shape))


def _fingerprint(x: torch.Tensor, shape: tuple, model_cfg: dict, train_cfg: dict, seed: int,
                 precision: str) -> str:
    return json.dumps({"model": model_cfg, "seed": seed, "shape": list(shape), "n": int(x.shape[0]),
                       "data": hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest(),
                       "precision": precision,
                       "train": {k: v for k, v in train_cfg.items() if k not in _SPEED_KEYS + ("precision",)}},
                      sort_keys=True)


def _resume_state(state_path: Path, fingerprint: str, steps: int) -> dict | None:
    if not state_path.exists():
        return None
    state = load_checkpoint(state_path, required=("model", "optimizer", "step", "generator", "log"))
    if state.get("fingerprint") != fingerprint:
        log_.warning("%s was made with other settings: training afresh", state_path)
        return None
    if state["step"] > steps:
        log_.warning("%s is past the configured %d steps: training afresh", state_path, steps)
        return None
    return state


def train_unet(x: torch.Tensor, shape: tuple[int, int, int], model_cfg: dict, train_cfg: dict,
               seed: int, state_path: str | Path, progress: bool = True,
               device: str = "auto") -> tuple[nn.Module, pd.DataFrame, dict]:
    """Train a U-Net on data x (n, d) float32 with C*H*W = d.

    Returns (model on the CPU in eval mode, with the EMA weights when ``ema`` is
    set; loss log DataFrame ``step, loss, lr``; info dict ``device, precision,
    channels_last, compile, ema, steps_per_second, resumed_from``).
    """
    dev = resolve_device(device)
    precision = resolve_precision(train_cfg.get("precision", "auto"), dev)
    channels_last = resolve_channels_last(train_cfg.get("channels_last"), dev)
    ema_decay = train_cfg.get("ema")
    torch.manual_seed(derive_seed(seed, "init"))  # weights and dropout use the global generator
    model = build_unet(model_cfg, shape[0])
    g = torch.Generator().manual_seed(seed)  # data stream, on the CPU on every device
    times = torch.as_tensor(ddpm_times(), dtype=torch.float32)
    state_path = Path(state_path)
    fingerprint = _fingerprint(x, shape, model_cfg, train_cfg, seed, precision)
    state = _resume_state(state_path, fingerprint, train_cfg["steps"])
    step, log = 0, []
    if state is not None:
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise InputError(f"{state_path}: resume state does not match the configured model "
                             f"({str(err).splitlines()[0][:120]}); delete it to train afresh") from None
    model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params] if ema_decay else None
    opt = torch.optim.Adam(params, lr=train_cfg["lr"])
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            for e, s in zip(ema, state["ema"]):
                e.copy_(s)
        g.set_state(state["generator"])
        set_rng_states(state, dev)
        step, log = int(state["step"]), [tuple(r) for r in state["log"].tolist()]
    resumed_from = step
    fwd = torch.compile(model) if train_cfg.get("compile") else model
    xd = place_data(x, dev)
    n = x.shape[0]
    steps, batch = train_cfg["steps"], train_cfg["batch_size"]
    bar = tqdm(total=steps, initial=step, desc="train unet", unit="step", disable=not progress, mininterval=2)
    pending: list[tuple[int, torch.Tensor, float]] = []  # losses still on the device (no sync per step)

    def flush() -> None:
        if pending:
            values = torch.stack([p[1] for p in pending]).float().cpu().tolist()
            log.extend((s, v, lr_) for (s, _, lr_), v in zip(pending, values))
            pending.clear()
            bar.set_postfix(loss=f"{np.mean([r[1] for r in log[-50:]]):.4f}", lr=f"{log[-1][2]:.2e}")

    def save() -> None:
        flush()
        save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                         "generator": g.get_state(), **rng_states(dev), "fingerprint": fingerprint,
                         "ema": ema if ema is not None else [],
                         "log": torch.tensor(log, dtype=torch.float64).reshape(-1, 3)}, state_path)

    model.train()
    start = time.perf_counter()
    while step < steps:
        lr = learning_rate(step, train_cfg, n)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (batch,), generator=g)
        t = times[torch.randint(0, len(times), (batch,), generator=g)]
        eps = torch.randn(batch, x.shape[1], generator=g)
        a = xd[idx.to(xd.device)].to(dev, non_blocking=True)
        t, eps = t.to(dev, non_blocking=True), eps.to(dev, non_blocking=True)
        loss = dsm_loss(fwd, a, t, eps, shape, precision, channels_last)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - ema_decay)
        step += 1
        pending.append((step, loss.detach(), lr))
        bar.update(1)
        if step % 50 == 0:
            flush()
        if step % train_cfg["checkpoint_every"] == 0 or step == steps:
            save()
    flush()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - start
    bar.close()
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    info = {"device": str(dev), "precision": precision, "channels_last": channels_last,
            "compile": bool(train_cfg.get("compile")), "ema": ema_decay, "resumed_from": resumed_from,
            "steps_per_second": (steps - resumed_from) / elapsed if steps > resumed_from else None}
    frame = pd.DataFrame({"step": np.array([r[0] for r in log], dtype=np.int64),
                          "loss": np.array([r[1] for r in log], dtype=np.float64),
                          "lr": np.array([r[2] for r in log], dtype=np.float64)})
    return model, frame, info


def train_classifier(x: torch.Tensor, labels: torch.Tensor, shape: tuple[int, int, int],
                     cfg: dict, seed: int, progress: bool = True,
                     device: str = "auto") -> tuple[nn.Module, float, int]:
    """Train the class classifier (``cfg["arch"]``: ``small_cnn`` or ``resnet18``) on
    a random ``1 - holdout`` split of (x (n, d), labels (n,)); returns (model on the
    CPU in eval mode, held-out accuracy, held-out size). Inputs are augmented with
    Gaussian noise of std ``noise`` so that slightly noisy generated samples are
    classified as well."""
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(derive_seed(seed, "init"))
    n = x.shape[0]
    perm = torch.randperm(n, generator=g)
    n_test = max(1, int(round(cfg["holdout"] * n)))
    test, train = perm[:n_test], perm[n_test:]
    model = build_classifier(cfg, shape).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    batch = min(cfg["batch_size"], len(train))
    steps = cfg["epochs"] * math.ceil(len(train) / batch)
    xd, yd = place_data(x, dev), labels.to(dev)
    model.train()
    for _ in tqdm(range(steps), desc=f"train classifier ({cfg.get('arch', 'small_cnn')})", unit="step",
                  disable=not progress, mininterval=2):
        idx = train[torch.randint(0, len(train), (batch,), generator=g)]
        xb = xd[idx.to(xd.device)].to(dev) + cfg["noise"] * torch.randn(batch, x.shape[1], generator=g).to(dev)
        loss = F.cross_entropy(model(xb.view(batch, *shape)), yd[idx.to(dev)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model = model.to("cpu").eval()
    pred = classifier_labeller(model, shape)(x[test])
    return model, float((pred == labels[test]).float().mean()), int(n_test)


def classifier_labeller(model: nn.Module, shape: tuple[int, int, int], batch: int = 1024,
                        device: str = "cpu"):
    """Labeller ``(B, d) -> (B,)`` int64 classes (on the CPU) from a trained classifier,
    evaluated ``batch`` rows at a time on ``device``."""
    dev = resolve_device(device)
    model = model.to(dev).eval()

    @torch.no_grad()
    def label(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[i:i + batch].to(dev).view(-1, *shape)).argmax(1).cpu()
                          for i in range(0, x.shape[0], batch)])
    return label
