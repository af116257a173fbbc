"""Held-out accuracy and training time of the two classifier architectures on the
embedded data sets (scikit-learn digits 1/8, Fashion-MNIST trousers/bags from
Debian's package, scikit-image's LFW faces/non-faces), with each data set's
subset as the configs make it.

python benchmarks/bench_classifiers.py [--archs small_cnn resnet18] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from diffusion_regimes import stages
from diffusion_regimes.classifier import train_classifier
from diffusion_regimes.data import image_shape, load_subset
from diffusion_regimes.models import count_parameters

DATASETS = {
    "digits": {"source": "sklearn_digits", "classes": [1, 8]},
    "fashion": {"source": "fashion_mnist", "classes": ["Trouser", "Bag"], "per_class": 1000},
    "lfw": {"source": "lfw_subset", "classes": ["face", "non-face"]},
}
ARCH = {  # classifier settings per architecture (the schema's defaults for small_cnn)
    "small_cnn": {"arch": "small_cnn", "width": 16, "epochs": 100, "batch_size": 64, "lr": 2e-3},
    "resnet18": {"arch": "resnet18", "width": 16, "epochs": None, "batch_size": 64, "lr": 1e-3},
}
RESNET_STEPS = 200  # ResNet-18 gets at least this many optimiser steps (its BatchNorm statistics need them)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=sorted(ARCH), choices=sorted(ARCH))
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(f"{'data':<8} {'n':>5} {'shape':>9} {'arch':<10} {'parameters':>11} {'epochs':>6} "
          f"{'accuracy':>8} {'held out':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            path = str(Path(tmp) / f"{name}.parquet")
            stages.subset({}, {"data": path, "reference": path + ".reference"}, name,
                          {"per_class": None, "holdout": 0.0, **DATASETS[name]}, 0)
            x, labels, meta = load_subset(path)
            shape = image_shape(meta)
            for arch in args.archs:
                cfg = {**ARCH[arch], "holdout": 0.2, "noise": 0.05}
                if cfg["epochs"] is None:  # enough epochs for RESNET_STEPS steps
                    per_epoch = math.ceil(round(0.8 * x.shape[0]) / cfg["batch_size"])
                    cfg["epochs"] = max(10, math.ceil(RESNET_STEPS / per_epoch))
                t0 = time.perf_counter()
                net, acc, n_test = train_classifier(x, labels, shape, cfg, 0, progress=False, device=args.device)
                print(f"{name:<8} {x.shape[0]:>5} {'x'.join(map(str, shape)):>9} {arch:<10} "
                      f"{count_parameters(net):>11,} {cfg['epochs']:>6} {acc:>8.3f} {n_test:>8} "
                      f"{time.perf_counter() - t0:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
