"""Where networks run and at which precision.

One place resolves the config's ``device`` (``auto``: CUDA when available, else
the CPU), the training ``precision`` (``auto``: bf16 autocast on CUDA, float32 on
the CPU) and the memory layout (``channels_last`` on CUDA by default), so that
the train, classifier and network-sampling stages behave alike. Random numbers
that define the data stream are drawn on the CPU whatever the device, so a run
sees the same batches on any machine.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from .io import InputError

log = logging.getLogger("diffusion_regimes")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without a GPU is an error."""
    if name not in DEVICES:
        raise InputError(f"device {name!r} is not one of {DEVICES}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device: cuda was asked for but torch sees no GPU; use device: auto or cpu")
    return torch.device(name)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag of
    Linux's ``/proc/cpuinfo``); None where that file cannot be read (other systems)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA, ``fp32`` on the CPU; explicit values pass through.
    An explicit ``bf16`` on a CPU without native bf16 is kept (it is part of the result) with a
    warning: there autocast is emulated, 9.4x slower than fp32 for the default U-Net's training
    step on one such CPU (an AMD EPYC without AVX-512), where a CPU with AVX-512 BF16 gains
    1.07-1.18x."""
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type == "cpu" and cpu_has_native_bf16() is False:
        log.warning("precision bf16 on a CPU without native bf16 (no avx512_bf16 or amx_bf16 flag): autocast is "
                    "emulated and several times slower than fp32 (9.4x measured for the default U-Net); set "
                    "train.precision (or network_sampler.precision) to fp32 on this machine")
    return precision


def resolve_channels_last(flag: bool | None, device: torch.device) -> bool:
    """``None`` -> channels_last on CUDA only (it slows convolutions on most CPUs)."""
    return device.type == "cuda" if flag is None else bool(flag)


def autocast(device: torch.device, precision: str):
    """Context: bf16 autocast when ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-d tensor in channels_last memory format when asked, else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def place_data(x: torch.Tensor, device: torch.device, fraction: float = 0.5) -> torch.Tensor:
    """The training data on ``device`` when it takes less than ``fraction`` of the
    free device memory, else on the CPU (pinned on CUDA, batches copied per step)."""
    if device.type != "cuda":
        return x
    free, _ = torch.cuda.mem_get_info(device)
    nbytes = x.element_size() * x.nelement()
    if nbytes < fraction * free:
        return x.to(device)
    log.info("data (%.2f GiB) kept on the CPU: more than %.0f%% of the free GPU memory", nbytes / 2**30,
             100 * fraction)
    return x.pin_memory()


def rng_states(device: torch.device) -> dict:
    """Global RNG states (dropout) of the CPU and, on CUDA, of the device."""
    states = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in states:
        torch.cuda.set_rng_state(states["cuda_rng"], device)
