"""Training of noise-predicting networks (denoising score matching).

DDPM training in OU time: training times drawn from ``train.times``
(:func:`diffusion_regimes.schedule.training_times`; by default the DDPM recipe, a step k
uniform in 1..1000 at OU time ``t_k = -1/2 log abar_k``; or continuous times), and the loss of the network wrapper
(:meth:`diffusion_regimes.networks.EpsilonModel.loss`: ``|eps_theta(x_t, t) - eps|^2``,
mean over coordinates). Adam; the learning rate is multiplied by ``lr_decay`` every
``lr_decay_epochs`` epochs (the paper: 0.98 every 50 epochs). Optional exponential
moving average (EMA) of the weights.

Speed (:mod:`diffusion_regimes.device`): on a GPU, bf16 autocast, channels_last
and, when asked, ``torch.compile``; the data live on the device when they fit.
Batch indices, times and noise are drawn on the CPU from the run's generator,
so the data stream is the same on every device.

Resumable: every ``checkpoint_every`` steps the full state (model, optimiser,
EMA, step, generator and RNG states, loss log) is written atomically to
``state_path``, a file that is not a declared output; a rerun resumes from it
and, on the CPU, ends with the same weights as an uninterrupted run. The
learning rate is a function of the step, so it resumes with it. A state made
from other data, another network or other result-changing settings (its
fingerprint differs) is not resumed; a state past the configured ``steps`` is
not resumed either.

Snapshots (:mod:`diffusion_regimes.memorisation`): ``start`` names the state of an
earlier, shorter run of the same settings (a weight snapshot, which holds the full
state); training continues from it when ``state_path`` holds nothing further along.
A chain of such runs ends with the same weights as one uninterrupted run.

The run options (``options``: the train block's ``checkpoint_every``, ``compile``,
``channels_last``, :data:`diffusion_regimes.config.RUN_OPTIONS`) cannot change the result
and may differ between a run and its resumption: they are not in the resume fingerprint.
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
from tqdm import tqdm

from .device import place_data, resolve_channels_last, resolve_device, resolve_precision, rng_states, set_rng_states
from .errors import InputError
from .io import load_checkpoint, save_checkpoint
from .models import check_network_fits
from .networks import EpsilonModel, build_model
from .schedule import ddpm_times, training_times
from .seeding import Stream, generator, global_torch_seed

log_ = logging.getLogger("diffusion_regimes")

#: train keys left out of the resume fingerprint: ``steps`` (a longer run continues a
#: shorter one's state: the learning rate and the data stream are functions of the step);
#: ``precision`` enters resolved; the run options come apart (``options``)
_NOT_FINGERPRINTED = ("steps", "precision")


def learning_rate(step: int, cfg: dict, n: int) -> float:
    """Learning rate at a 0-based step: ``lr * lr_decay ** floor(epoch / lr_decay_epochs)``."""
    epoch = step * cfg["batch_size"] // max(n, 1)
    return cfg["lr"] * cfg["lr_decay"] ** (epoch // cfg["lr_decay_epochs"])


def _fingerprint(x: torch.Tensor, model: EpsilonModel, arch: str, model_cfg: dict, train_cfg: dict, seed: int,
                 precision: str) -> str:
    return json.dumps({"model": model_cfg, "arch": arch, "time_scale": model.time_scale, "seed": seed,
                       "shape": list(model.shape), "n": int(x.shape[0]),
                       "data": hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest(),
                       "precision": precision,
                       "train": {k: v for k, v in train_cfg.items() if k not in _NOT_FINGERPRINTED
                                 and not (k == "times" and v == "ddpm")}},  # states made before the key
                      sort_keys=True)


def _resume_state(state_path: Path, fingerprint: str, steps: int, start: Path | None = None) -> dict | None:
    """The state to resume from: ``state_path`` (a killed run's), else ``start`` (the
    snapshot this run continues), whichever is further along; None to train afresh."""
    own = _own_state(state_path, fingerprint, steps) if state_path.exists() else None
    if start is None:
        return own
    first = load_checkpoint(start, required=("model", "optimizer", "step", "generator", "log"))
    if first.get("fingerprint") != fingerprint or first["step"] > steps:
        raise InputError(f"{start}: this snapshot was made with other data or settings, or past step {steps}; "
                         "delete the experiment's snapshots folder and re-run")
    if own is not None and Path(start).stat().st_mtime > state_path.stat().st_mtime:
        log_.warning("%s is older than the snapshot %s it would continue: training from the snapshot", state_path,
                     start)
        own = None
    return own if own is not None and own["step"] >= first["step"] else first


def _own_state(state_path: Path, fingerprint: str, steps: int) -> dict | None:
    state = load_checkpoint(state_path, required=("model", "optimizer", "step", "generator", "log"))
    if state.get("fingerprint") != fingerprint:
        log_.warning("%s was made with other settings: training afresh", state_path)
        return None
    if state["step"] > steps:
        log_.warning("%s is past the configured %d steps: training afresh", state_path, steps)
        return None
    return state


def train_network(x: torch.Tensor, arch: str, model_cfg: dict, shape: tuple[int, ...], train_cfg: dict,
                  seed: int, state_path: str | Path, progress: bool = True,
                  device: str = "auto", start: str | Path | None = None,
                  options: dict | None = None) -> tuple[EpsilonModel, pd.DataFrame, dict]:
    """Train a noise-predicting network of architecture ``arch`` on data x (n, d) float32
    whose samples have ``shape`` (prod(shape) = d). ``train_cfg`` holds the config's
    ``train`` block without its run options (its keys but ``steps`` and ``precision`` are
    the resume fingerprint), ``options`` the run options (``checkpoint_every``, ``compile``,
    ``channels_last``: not fingerprinted); ``seed`` seeds the data stream, and
    through :data:`Stream.INIT` the initial weights and dropout.

    Returns (the :class:`EpsilonModel` on the CPU in eval mode, with the EMA weights when
    ``ema`` is set; loss log DataFrame ``step, loss, lr``; info dict ``device, precision,
    channels_last, compile, ema, steps_per_second, resumed_from``). ``start``: the state
    (a snapshot) of a shorter run of the same settings to continue; the final state is
    always written to ``state_path``.
    """
    check_network_fits(arch, model_cfg, shape, copies=4 + bool((options or {}).get("ema", train_cfg.get("ema"))))
    with global_torch_seed(seed, Stream.INIT):  # weights and dropout use torch's global generator
        model = build_model(arch, model_cfg, shape)
        return _train(model, x, arch, model_cfg, train_cfg, seed, Path(state_path), progress, device,
                      None if start is None else Path(start), options or {})


def _train(model: EpsilonModel, x: torch.Tensor, arch: str, model_cfg: dict, train_cfg: dict, seed: int,
           state_path: Path, progress: bool, device: str, start: Path | None,
           options: dict) -> tuple[EpsilonModel, pd.DataFrame, dict]:
    result_cfg, train_cfg = train_cfg, {**train_cfg, **options}
    dev = resolve_device(device)
    precision = resolve_precision(train_cfg.get("precision", "auto"), dev)
    channels_last = resolve_channels_last(train_cfg.get("channels_last"), dev)
    ema_decay = train_cfg.get("ema")
    g = generator(seed)  # data stream, on the CPU on every device
    times = torch.as_tensor(ddpm_times(), dtype=torch.float32)
    time_kind = train_cfg.get("times", "ddpm")
    fingerprint = _fingerprint(x, model, arch, model_cfg, result_cfg, seed, precision)
    state = _resume_state(state_path, fingerprint, train_cfg["steps"], start)
    step, log = 0, []
    if state is not None:
        try:
            model.net.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{state_path}: resume state does not match the configured model "
                             f"({str(err).splitlines()[0][:120]}); delete it to train afresh") from None
    model.to(dev, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params] if ema_decay else None
    opt = torch.optim.Adam(params, lr=train_cfg["lr"])
    if state is not None:
        try:
            opt.load_state_dict(state["optimizer"])
            if ema is not None:
                for e, s in zip(ema, state["ema"], strict=True):
                    e.copy_(s)
            g.set_state(state["generator"])
            set_rng_states(state, dev)
            step, log = int(state["step"]), [tuple(r) for r in state["log"].tolist()]
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"{state_path}: malformed resume state ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:120] if str(err) else ''}); delete it to train "
                             "afresh") from None
    resumed_from = step
    compiled = torch.compile(model.net) if train_cfg.get("compile") else None
    xd = place_data(x, dev)
    n = x.shape[0]
    steps, batch = train_cfg["steps"], train_cfg["batch_size"]
    every = train_cfg.get("checkpoint_every") or steps  # a run option: the last step when not given
    bar = tqdm(total=steps, initial=step, desc=f"train {arch}", unit="step", disable=not progress, mininterval=2)
    pending: list[tuple[int, torch.Tensor, float]] = []  # losses still on the device (no sync per step)
    saved = [step]  # the step of the last state written (a diverged run keeps it)

    def flush() -> None:
        if pending:
            values = torch.stack([p[1] for p in pending]).float().cpu().tolist()
            for (s, _, _), v in zip(pending, values):  # checked before anything is logged or saved
                if not math.isfinite(v):
                    raise InputError(f"training {arch} diverged: the loss is {v} at step {s}; the last finite "
                                     f"state (step {saved[0]}) is kept in {state_path}; lower train.lr (or train "
                                     "in fp32) and re-run")
            log.extend((s, v, lr_) for (s, _, lr_), v in zip(pending, values))
            pending.clear()
            bar.set_postfix(loss=f"{np.mean([r[1] for r in log[-50:]]):.4f}", lr=f"{log[-1][2]:.2e}")

    def save() -> None:
        flush()
        save_checkpoint({"model": model.net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                         "generator": g.get_state(), **rng_states(dev), "fingerprint": fingerprint,
                         "ema": ema if ema is not None else [],
                         "log": torch.tensor(log, dtype=torch.float64).reshape(-1, 3)}, state_path)
        saved[0] = step

    model.train()
    start = time.perf_counter()
    while step < steps:
        lr = learning_rate(step, train_cfg, n)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, n, (batch,), generator=g)
        if time_kind == "ddpm":  # the stream of the runs made before train.times
            t = times[torch.randint(0, len(times), (batch,), generator=g)]
        else:
            t = training_times(time_kind, torch.rand(batch, generator=g, dtype=torch.float64))
        eps = torch.randn(batch, x.shape[1], generator=g)
        a = xd[idx.to(xd.device)].to(dev, non_blocking=True)
        t, eps = t.to(dev, non_blocking=True), eps.to(dev, non_blocking=True)
        loss = model.loss(a, t, eps, precision, channels_last, compiled)
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
        if step % every == 0 or step == steps:
            save()
    if step == resumed_from:  # nothing to train (a snapshot at the configured step): its state is the final one
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
    return model, loss_log_frame(np.asarray(log, dtype=np.float64)), info


def loss_log_frame(rows: np.ndarray) -> pd.DataFrame:
    """The loss log ``step, loss, lr`` from its rows (N, 3) (a training state's ``log``)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return pd.DataFrame({"step": rows[:, 0].astype(np.int64), "loss": rows[:, 1], "lr": rows[:, 2]})


def training_results(net: EpsilonModel, loss_log: pd.DataFrame, info: dict) -> dict:
    """The scalars a trained network's files record: parameters, the mean loss of the last 100
    steps, steps, the time scale and the run's info."""
    from .models import count_parameters

    return {"parameters": count_parameters(net),
            "final_loss": float(loss_log["loss"].tail(100).mean()) if len(loss_log) else float("nan"),
            "steps": int(loss_log["step"].iloc[-1]) if len(loss_log) else 0, "time_scale": net.time_scale, **info}


def network_from_snapshot(path: str | Path, steps: int) -> tuple[EpsilonModel, pd.DataFrame, dict]:
    """The network of a weight snapshot that must be at ``steps`` (the memorisation study's
    last one, the experiment's model): (network, its loss log, results)."""
    from .networks import load_network

    net = load_network(path, "train_snapshot")
    state = load_checkpoint(path, required=("log", "step", "metadata"))
    if int(state["step"]) != steps:
        raise InputError(f"{path}: a snapshot at step {int(state['step'])}, not the configured {steps}; "
                         "delete it and re-run")
    loss_log = loss_log_frame(state["log"].numpy())
    made = state["metadata"] if isinstance(state["metadata"], dict) else {}
    results = {**training_results(net, loss_log, {k: made.get(k) for k in ("device", "precision", "channels_last",
                                                                         "compile", "ema")}),
               "steps": int(state["step"]), "from_snapshot": str(path)}
    return net, loss_log, results
