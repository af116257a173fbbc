"""Training throughput of this package's DDPM U-Net against diffusers' UNet2DModel
configured to the same network, measured in the same run.

Both networks take the same training step (the denoising loss of
:meth:`diffusion_regimes.networks.EpsilonModel.loss`: noisy batch, MSE on the noise,
backward, Adam) on the same batches, with the same precision and memory
format. The diffusers model is built with block_out_channels = base x
channel_mult, the same number of residual blocks, attention (one head) at the
same resolutions and in the middle block, dropout and 32-group GroupNorm; the
parameter counts are printed side by side.

CPU:  python benchmarks/bench_train_unet.py                      (paper 32x32 net, batch 16)
GPU:  python benchmarks/bench_train_unet.py --device cuda --batch 128 --precision bf16 --channels-last [--compile]

``--speedups`` measures this package's U-Net alone in every combination of precision
(fp32, bf16 autocast) and ``torch.compile`` against eager fp32, then diffusers' network in
eager fp32, all in one run: what makes CPU training faster (the default config's network:
``--preset default --batch 64 --speedups``).

``--flops`` counts the floating-point operations of one training step of this package's
U-Net (forward and backward, torch's FlopCounterMode) and prints the steps per second and
the hours per million steps that a sustained throughput of ``--tflops`` would give: the
cost estimate of a GPU config measured where no GPU is (``--preset memo_celeba --batch 512
--flops``).
"""

from __future__ import annotations

import argparse
import time

import torch

from diffusion_regimes.models import UNet, count_parameters
from diffusion_regimes.networks import DEFAULT_TIME_SCALE, EpsilonModel
from diffusion_regimes.schedule import ddpm_times

PRESETS = {  # name: (channels, channel_mult, num_res_blocks, attention_resolutions, size, in_channels)
    "paper32": (64, (1, 2, 4, 4), 2, (1, 2), 32, 3),
    "paper64": (64, (1, 2, 4, 4), 2, (1, 2), 64, 3),
    "default": (16, (1, 2), 1, (), 16, 1),
    # the memorisation study's GPU config (config/memorisation_celeba.yaml): CelebA 32x32 greyscale
    "memo_celeba": (32, (1, 2, 4), 2, (), 32, 1),
}


def diffusers_unet(channels, mult, blocks, attention, size, in_channels, dropout):
    from diffusers import UNet2DModel

    levels = range(len(mult))
    return UNet2DModel(
        sample_size=size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=tuple(channels * m for m in mult), layers_per_block=blocks,
        down_block_types=tuple("AttnDownBlock2D" if i in attention else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in attention else "UpBlock2D" for i in reversed(levels)),
        dropout=dropout, norm_num_groups=min(32, channels // 4), attention_head_dim=None, add_attention=True)


class DiffusersAdapter(torch.nn.Module):
    """``eps(x, c_noise)`` for UNet2DModel, which takes DDPM step indices: the wrapper's
    ``c_noise = time_scale * t`` is mapped back to OU time, then to the step."""

    def __init__(self, net, time_scale):
        super().__init__()
        self.net, self.time_scale = net, time_scale

    def forward(self, x, c_noise):
        t = c_noise.float() / self.time_scale
        k = torch.searchsorted(TIMES.to(t.device), t.contiguous()).clamp(max=len(TIMES) - 1)
        return self.net(x, k).sample


TIMES = torch.as_tensor(ddpm_times(), dtype=torch.float32)


def steps_per_second(net, shape, a, dev, precision, channels_last, steps, warmup, compile_):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = EpsilonModel(net, shape).to(dev, memory_format=fmt).train()
    fwd = torch.compile(model.net) if compile_ else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    batches = [(TIMES[torch.randint(0, len(TIMES), (a.shape[0],), generator=g)].to(dev),
                torch.randn(a.shape, generator=g).to(dev)) for _ in range(2)]

    def step(i):
        t, eps = batches[i % 2]
        loss = model.loss(a, t, eps, precision, channels_last, fwd)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for i in range(warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    rate = steps / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    return rate, peak


def step_flops(net, shape, a) -> float:
    """Floating-point operations of one training step (loss, backward) of ``net`` on batch a."""
    from torch.utils.flop_counter import FlopCounterMode

    model = EpsilonModel(net, shape)
    t = TIMES[torch.arange(a.shape[0]) % len(TIMES)]
    eps = torch.randn(a.shape, generator=torch.Generator().manual_seed(2))
    with FlopCounterMode(display=False) as counter:
        model.loss(a, t, eps).backward()
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="paper32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--speedups", action="store_true", help="eager/compile x fp32/bf16 of our U-Net, and diffusers")
    p.add_argument("--flops", action="store_true", help="FLOPs of one training step and the GPU time they imply")
    p.add_argument("--tflops", type=float, nargs="+", default=[50.0, 150.0],
                   help="sustained TFLOP/s to convert --flops into time (default: 50 and 150)")
    args = p.parse_args()
    dev = torch.device(args.device)
    channels, mult, blocks, attention, size, cin = PRESETS[args.preset]
    shape = (cin, size, size)
    torch.manual_seed(0)
    ours = UNet(cin, channels, mult, blocks, attention, args.dropout)
    if args.flops:  # counted on the CPU (no device needed, nor diffusers)
        flops = step_flops(ours, shape, torch.randn(args.batch, cin * size * size))
        print(f"preset {args.preset}: {cin}x{size}x{size}, base {channels}, mult {mult}, {blocks} blocks; batch "
              f"{args.batch}; parameters {count_parameters(ours):,}; one training step (forward + backward) "
              f"{flops / 1e9:.1f} GFLOP")
        for tf in args.tflops:
            rate = tf * 1e12 / flops
            print(f"at {tf:g} TFLOP/s sustained: {rate:.0f} steps/s, {1e6 / rate / 3600:.2f} h per million steps")
        return
    theirs = DiffusersAdapter(diffusers_unet(channels, mult, blocks, attention, size, cin, args.dropout),
                              DEFAULT_TIME_SCALE)
    a = torch.randn(args.batch, cin * size * size).to(dev)
    print(f"preset {args.preset}: {cin}x{size}x{size}, base {channels}, mult {mult}, {blocks} blocks, "
          f"attention {attention}; batch {args.batch}; device {dev}; {args.precision}; "
          f"channels_last {args.channels_last}; compile {args.compile}; threads {torch.get_num_threads()}")
    if args.speedups:
        rows = []
        for precision, compile_ in (("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)):
            rate, _ = steps_per_second(ours, shape, a, dev, precision, args.channels_last, args.steps, args.warmup,
                                       compile_)
            rows.append((f"ours {precision}{' compile' if compile_ else ''}", rate))
            ours.cpu()
        rate, _ = steps_per_second(theirs, shape, a, dev, "fp32", args.channels_last, args.steps, args.warmup, False)
        rows.append(("diffusers fp32", rate))
        print(f"{'configuration':<22} {'steps/s':>9} {'ratio to eager fp32':>20}")
        for name, rate in rows:
            print(f"{name:<22} {rate:>9.3f} {rate / rows[0][1]:>20.3f}")
        return
    rows = []
    for name, net in [("diffusion_regimes.UNet", ours), ("diffusers.UNet2DModel", theirs)]:
        rate, peak = steps_per_second(net, shape, a, dev, args.precision, args.channels_last, args.steps,
                                      args.warmup, args.compile)
        rows.append((name, count_parameters(net), rate, peak))
        net.cpu()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    print(f"{'model':<24} {'parameters':>12} {'steps/s':>9} {'images/s':>10} {'peak GiB':>9}")
    for name, n, rate, peak in rows:
        print(f"{name:<24} {n:>12,} {rate:>9.3f} {rate * args.batch:>10.1f} {peak:>9.2f}")
    print(f"throughput ratio (ours / diffusers): {rows[0][2] / rows[1][2]:.3f}")


if __name__ == "__main__":
    main()
