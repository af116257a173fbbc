"""A model trained elsewhere, for "Measure your own model" in the README: a diffusers
``UNet2DModel`` trained with diffusers' own ``DDPMScheduler`` (its noise, its timesteps,
its epsilon loss) on the workflow's digits subset, saved with ``save_pretrained``.

    python examples/train_diffusers_digits.py results/digits/data.parquet models/diffusers-digits

then ``snakemake --configfile config/external.yaml`` measures it. The subset file is the
one the workflow writes (``snakemake results/digits/data.parquet``), so that the model is
trained on exactly the data its memorisation is measured against; the images it was
trained on are recorded in the folder (``training_data.json``), and the measurement warns
when they overlap the reference set. Needs ``pip install diffusers``. Nothing here is part
of the package: it stands for your own training code.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from diffusion_regimes.cpus import prepare_threads

THREADS = prepare_threads(2)  # the idle CPUs this process may use, decided before torch starts its threads

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from diffusion_regimes.data import load_subset  # noqa: E402
from diffusion_regimes.scoremodels.external import write_training_data  # noqa: E402


def build_unet(size: int, channels: int = 1, width: int = 16):
    """A small UNet2DModel for size x size images (two resolutions, no attention)."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       block_out_channels=(width, 2 * width), layers_per_block=1, norm_num_groups=min(8, width),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))


def train(images: torch.Tensor, folder: str | Path, steps: int = 4000, batch_size: int = 64, lr: float = 1e-3,
          width: int = 16, seed: int = 0, progress: bool = True) -> float:
    """Train on ``images`` (n, C, H, W) and save model and scheduler to ``folder``; returns the
    mean loss of the last 100 steps."""
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    model = build_unet(images.shape[-1], images.shape[1], width)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in tqdm(range(steps), desc="train diffusers UNet2DModel", disable=not progress, mininterval=5):
        batch = images[torch.randint(len(images), (batch_size,))]
        noise = torch.randn_like(batch)
        k = torch.randint(0, sched.config.num_train_timesteps, (batch_size,))
        loss = torch.nn.functional.mse_loss(model(sched.add_noise(batch, noise, k), k).sample, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.save_pretrained(folder)  # config.json + diffusion_pytorch_model.safetensors
    sched.save_pretrained(folder)  # scheduler_config.json
    return sum(losses[-100:]) / len(losses[-100:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="the workflow's subset, results/{exp}/data.parquet")
    parser.add_argument("folder", help="where to save_pretrained the model and its scheduler")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    x, _, meta = load_subset(args.data)
    shape = meta["shape"]
    side = math.isqrt(x.shape[1] // shape[0])
    loss = train(x.view(-1, shape[0], side, side), args.folder, args.steps, width=args.width)
    # which images it was trained on: the measurement warns if they overlap its reference set
    write_training_data(args.folder, args.data)
    print(f"saved to {args.folder}: {args.steps} steps, final loss {loss:.4f}")


if __name__ == "__main__":
    main()
