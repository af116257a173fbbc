"""Training of noise-predicting networks and of the class classifier.

Denoising score matching as in DDPM: a DDPM step k uniform in 1..1000, OU time
``t_k = -1/2 log abar_k``, ``x_t = a e^{-t} + sqrt(Delta_t) eps``, loss
``|eps_theta(x_t, t) - eps|^2`` (mean over pixels). Adam; the learning rate is
multiplied by ``lr_decay`` every ``lr_decay_epochs`` epochs (the paper: 0.98
every 50 epochs).

Resumable: every ``checkpoint_every`` steps the full state (model, optimiser,
step, generator state, loss log) is written atomically to ``state_path``, a
file that is not a declared output; a rerun resumes from it and, on the CPU,
ends with the same weights as an uninterrupted run. A state made from other
data or other hyperparameters (its fingerprint differs) is not resumed; only
``steps`` and ``checkpoint_every`` may change between runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from .io import InputError, load_checkpoint, save_checkpoint
from .models import SmallCNN, build_unet
from .schedule import ddpm_times
from .seeding import derive_seed

log_ = logging.getLogger("diffusion_regimes")


def learning_rate(step: int, cfg: dict, n: int) -> float:
    """Learning rate at a 0-based step: ``lr * lr_decay ** floor(epoch / lr_decay_epochs)``."""
    epoch = step * cfg["batch_size"] // max(n, 1)
    return cfg["lr"] * cfg["lr_decay"] ** (epoch // cfg["lr_decay_epochs"])


def train_unet(x: torch.Tensor, shape: tuple[int, int, int], model_cfg: dict, train_cfg: dict,
               seed: int, state_path: str | Path, progress: bool = True):
    """Train a U-Net on data x (n, d); returns (model, loss log DataFrame ``step, loss, lr``)."""
    torch.manual_seed(derive_seed(seed, "init"))  # weights and dropout use the global generator
    model = build_unet(model_cfg, shape[0])
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg["lr"])
    g = torch.Generator().manual_seed(seed)
    times = torch.as_tensor(ddpm_times(), dtype=torch.float32)
    step, log = 0, []
    state_path = Path(state_path)
    # a state made with other hyperparameters is not resumed (more steps are fine)
    fingerprint = json.dumps({"model": model_cfg, "seed": seed, "shape": list(shape), "n": int(x.shape[0]),
                              "data": hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest(),
                              "train": {k: v for k, v in train_cfg.items()
                                        if k not in ("steps", "checkpoint_every")}}, sort_keys=True)
    state = None
    if state_path.exists():
        state = load_checkpoint(state_path, required=("model", "optimizer", "step", "generator", "log"))
        if state.get("fingerprint") != fingerprint:
            log_.warning("%s was made with other settings: training afresh", state_path)
            state = None
        elif state["step"] > train_cfg["steps"]:
            log_.warning("%s is past the configured %d steps: training afresh", state_path,
                         train_cfg["steps"])
            state = None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise InputError(f"{state_path}: resume state does not match the configured model "
                             f"({str(err).splitlines()[0][:120]}); delete it to train afresh") from None
        g.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, log = int(state["step"]), [tuple(r) for r in state["log"].tolist()]
    n = x.shape[0]
    steps, batch = train_cfg["steps"], train_cfg["batch_size"]
    bar = tqdm(total=steps, initial=step, desc="train unet", disable=not progress, mininterval=2)
    model.train()
    while step < steps:
        lr = learning_rate(step, train_cfg, n)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (batch,), generator=g)
        t = times[torch.randint(0, len(times), (batch,), generator=g)]
        eps = torch.randn(batch, x.shape[1], generator=g)
        xt = x[idx] * torch.exp(-t)[:, None] + torch.sqrt(-torch.expm1(-2 * t))[:, None] * eps
        loss = F.mse_loss(model(xt.view(batch, *shape), t), eps.view(batch, *shape))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        log.append((step, loss.item(), lr))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean([r[1] for r in log[-50:]]):.4f}")
        if step % train_cfg["checkpoint_every"] == 0 or step == steps:
            save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "step": step, "generator": g.get_state(),
                             "torch_rng": torch.get_rng_state(), "fingerprint": fingerprint,
                             "log": torch.tensor(log, dtype=torch.float64)}, state_path)
    bar.close()
    model.eval()
    return model, pd.DataFrame({"step": np.array([r[0] for r in log], dtype=np.int64),
                                "loss": [r[1] for r in log], "lr": [r[2] for r in log]})


def train_classifier(x: torch.Tensor, labels: torch.Tensor, shape: tuple[int, int, int],
                     cfg: dict, seed: int, progress: bool = True) -> tuple[SmallCNN, float, int]:
    """Train the class classifier on a random ``1 - holdout`` split of (x, labels);
    returns (model, held-out accuracy, held-out size). Inputs are data-convention
    vectors (n, d), augmented with Gaussian noise of std ``noise`` so that slightly
    noisy generated samples are classified as well."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(derive_seed(seed, "init"))
    n = x.shape[0]
    perm = torch.randperm(n, generator=g)
    n_test = max(1, int(round(cfg["holdout"] * n)))
    test, train = perm[:n_test], perm[n_test:]
    model = SmallCNN(shape[0], 2, cfg["width"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    batch = min(cfg["batch_size"], len(train))
    steps = cfg["epochs"] * math.ceil(len(train) / batch)
    model.train()
    for _ in tqdm(range(steps), desc="train classifier", disable=not progress, mininterval=2):
        idx = train[torch.randint(0, len(train), (batch,), generator=g)]
        xb = x[idx] + cfg["noise"] * torch.randn(batch, x.shape[1], generator=g)
        loss = F.cross_entropy(model(xb.view(batch, *shape)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(x[test].view(-1, *shape)).argmax(1)
    return model, float((pred == labels[test]).float().mean()), int(n_test)


def classifier_labeller(model: SmallCNN, shape: tuple[int, int, int], batch: int = 4096):
    """Labeller ``(B, d) -> (B,)`` int64 classes from a trained classifier."""
    @torch.no_grad()
    def label(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[i:i + batch].view(-1, *shape)).argmax(1)
                          for i in range(0, x.shape[0], batch)])
    return label
