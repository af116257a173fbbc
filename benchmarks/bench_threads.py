"""CPU threads under load: training steps per second of the default config's U-Net
(batch 64) alone and with one core held by another process, before and after the
job's thread sizing (:mod:`diffusion_regimes.cpus`).

Each configuration runs in its own process (OpenMP reads its environment once):

- ``2 threads, spinning``: what jobs did before (the rule's 2 threads; libgomp's default
  wait policy lets idle threads spin);
- ``2 threads, passive``: waiting threads sleep (``OMP_WAIT_POLICY=PASSIVE``);
- ``1 thread``;
- ``job's choice``: :func:`diffusion_regimes.cpus.prepare_threads` (what every job does now:
  as many threads as idle CPUs it may use, up to the rule's 2; libgomp's default wait).

The busy core is a Python busy loop in a separate process. Each measurement runs up to
``--seconds`` after 3 warm-up steps and prints steps/s and the slowest step.

    python benchmarks/bench_threads.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONFIGS = {  # name: (threads, OMP_WAIT_POLICY or None for libgomp's default; threads 0: the job's choice)
    "2 threads, spinning (before)": (2, None),
    "2 threads, passive": (2, "PASSIVE"),
    "1 thread": (1, None),
    "job's choice (after)": (0, None),
}


def worker(threads: int, seconds: float) -> dict:
    """Steps/s of the default U-Net's training step; ``threads`` 0 sizes the pool as jobs do."""
    chosen = threads
    if threads == 0:
        from diffusion_regimes.cpus import prepare_threads

        chosen = prepare_threads(2)
    import torch

    from diffusion_regimes.models import UNet
    from diffusion_regimes.networks import EpsilonModel
    from diffusion_regimes.schedule import ddpm_times

    torch.set_num_threads(chosen)
    torch.manual_seed(0)
    model = EpsilonModel(UNet(1, 16, (1, 2), 1, (), 0.1), (1, 16, 16)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    times = torch.as_tensor(ddpm_times(), dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(64, 256, generator=g)
    t, eps = times[torch.randint(0, len(times), (64,), generator=g)], torch.randn(64, 256, generator=g)

    def step():
        loss = model.loss(a, t, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    durations, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds and len(durations) < 400:
        t0 = time.perf_counter()
        step()
        durations.append(time.perf_counter() - t0)
    return {"threads": chosen, "policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "steps_per_s": len(durations) / sum(durations), "worst_s": max(durations), "steps": len(durations)}


def measure(threads: int, policy: str | None, seconds: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--seconds", str(seconds)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per configuration")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.seconds)))
        return
    print(f"CPUs usable: {len(os.sched_getaffinity(0))}; default U-Net (16 channels, mult 1,2), batch 64, "
          f"{args.seconds:g} s per row")
    print(f"{'load':<16} {'configuration':<30} {'threads':>7} {'steps/s':>8} {'slowest step (s)':>17}")
    rows = {}
    for load in ("alone", "one core busy"):
        busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "alone" else None)
        try:
            time.sleep(0.5 if busy else 0)
            for name, (threads, policy) in CONFIGS.items():
                r = measure(threads, policy, args.seconds)
                rows[load, name] = r
                print(f"{load:<16} {name:<30} {r['threads']:>7} {r['steps_per_s']:>8.2f} {r['worst_s']:>17.3f}",
                      flush=True)
        finally:
            if busy:
                busy.kill()
                busy.wait()
    before = rows["one core busy", "2 threads, spinning (before)"]["steps_per_s"]
    after = rows["one core busy", "job's choice (after)"]["steps_per_s"]
    alone = rows["alone", "2 threads, spinning (before)"]["steps_per_s"]
    print(f"one core busy: job's choice / before = {after / before:.1f}x; before keeps {before / alone:.0%} of its "
          f"speed alone, after {after / alone:.0%}")


if __name__ == "__main__":
    main()
