"""Classes of generated samples: a data model's closed form, or a trained classifier.

Solvable data models label samples in closed form
(:meth:`diffusion_regimes.datamodels.DataModel.classify`); image data get a
classifier (``small_cnn`` or torchvision's ResNet-18 from scratch) trained on the
subset with a held-out split, whose accuracy is kept in its checkpoint and refused
below ``classifier.min_accuracy``. :func:`labeller` gives the stages one callable
``(B, d) -> (B,)`` int64 either way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .device import place_data, resolve_device
from .errors import InputError
from .io import load_checkpoint, save_checkpoint
from .models import build_classifier
from .seeding import Stream, generator, global_torch_seed

Labeller = Callable[[torch.Tensor], torch.Tensor]


def train_classifier(x: torch.Tensor, labels: torch.Tensor, shape: tuple[int, int, int],
                     cfg: dict, seed: int, progress: bool = True,
                     device: str = "auto") -> tuple[nn.Module, float, int]:
    """Train the class classifier (``cfg["arch"]``: ``small_cnn`` or ``resnet18``) on
    a random ``1 - holdout`` split of (x (n, d), labels (n,)); returns (model on the
    CPU in eval mode, held-out accuracy, held-out size). Inputs are augmented with
    Gaussian noise of std ``noise`` so that slightly noisy generated samples are
    classified as well. ``seed`` seeds the split and the batches, and through
    :data:`Stream.INIT` the initial weights."""
    dev = resolve_device(device)
    g = generator(seed)
    n = x.shape[0]
    perm = torch.randperm(n, generator=g)
    n_test = max(1, int(round(cfg["holdout"] * n)))
    test, train = perm[:n_test], perm[n_test:]
    with global_torch_seed(seed, Stream.INIT):
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


#: a labelled sample whose top class probability is below this is counted as unsure
LOW_CONFIDENCE = 0.9


class ClassifierLabeller:
    """Labeller ``(B, d) -> (B,)`` int64 classes (on the CPU) from a trained classifier,
    evaluated ``batch`` rows at a time on ``device``; it records the classifier's
    confidence (top softmax probability) on everything it labels."""

    def __init__(self, model: nn.Module, shape: tuple[int, int, int], batch: int = 1024, device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.shape, self.batch = tuple(shape), int(batch)
        self.confidences: list[torch.Tensor] = []
        #: held-out images behind the classifier's accuracy (its error's uncertainty), when known
        self.n_test: int | None = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        labels = []
        for i in range(0, x.shape[0], self.batch):
            p = torch.softmax(self.model(x[i:i + self.batch].to(self.device).view(-1, *self.shape)).float(), 1).cpu()
            conf, lab = p.max(1)
            self.confidences.append(conf)
            labels.append(lab)
        return torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)

    def confidence_counts(self) -> dict:
        """Sums that merge across shards: labelled samples, the sum of their confidences, and
        how many were below :data:`LOW_CONFIDENCE`."""
        c = torch.cat(self.confidences) if self.confidences else torch.empty(0)
        return {"labelled": int(c.numel()), "confidence_sum": float(c.double().sum()),
                "low_confidence": int((c < LOW_CONFIDENCE).sum())}


def classifier_labeller(model: nn.Module, shape: tuple[int, int, int], batch: int = 1024,
                        device: str = "cpu") -> ClassifierLabeller:
    """A :class:`ClassifierLabeller` of a trained classifier."""
    return ClassifierLabeller(model, shape, batch, device)


def save_classifier(model: nn.Module, cfg: dict, shape: tuple[int, ...], accuracy: float, metadata: dict,
                    path: str | os.PathLike) -> None:
    """Write the classifier's checkpoint atomically (weights, config, shape, held-out accuracy)."""
    save_checkpoint({"state_dict": model.state_dict(), "config": cfg, "shape": list(shape), "accuracy": accuracy,
                     "metadata": metadata}, path)


def load_classifier(path: str | os.PathLike) -> tuple[nn.Module, tuple[int, int, int], float]:
    """(classifier in eval mode, image shape, held-out accuracy) from a checkpoint, with a
    one-line :class:`InputError` for anything malformed (the held-out size: :func:`held_out_size`)."""
    ckpt = load_checkpoint(path, required=("state_dict", "config", "shape", "accuracy"))
    fix = "delete it and re-run the classifier stage"
    try:
        shape = tuple(int(s) for s in ckpt["shape"])
        accuracy = float(ckpt["accuracy"])
        if len(shape) != 3 or min(shape) < 1 or not isinstance(ckpt["config"], dict):
            raise ValueError("shape must be (C, H, W) and config a mapping")
        net = build_classifier(ckpt["config"], shape)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: malformed classifier checkpoint ({type(err).__name__}: {err}); {fix}") from None
    try:
        net.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: weights do not fit the classifier it describes "
                         f"({str(err).splitlines()[0][:120]}); {fix}") from None
    return net.eval(), shape, accuracy


def held_out_size(path: str | os.PathLike) -> int | None:
    """The number of held-out images behind a classifier checkpoint's accuracy (None for a
    checkpoint that does not record it)."""
    n = (load_checkpoint(path).get("metadata") or {}).get("n_test")
    return int(n) if isinstance(n, (int, float)) and n >= 1 else None


@torch.no_grad()
def classifier_features(model: nn.Module, shape: tuple[int, int, int], x: torch.Tensor, batch: int = 1024,
                        device: str = "cpu") -> torch.Tensor:
    """Penultimate features (B, f) float32 on the CPU of images x (B, d): the input of the
    classifier's last linear layer (the feature space of the sample-quality distance)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InputError("the classifier has no linear head to take features from")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    seen: list[torch.Tensor] = []
    hook = linears[-1].register_forward_pre_hook(lambda _m, args: seen.append(args[0].float().flatten(1).cpu()))
    try:
        for i in range(0, x.shape[0], batch):
            model(x[i:i + batch].to(dev).view(-1, *shape))
    finally:
        hook.remove()
    return torch.cat(seen) if seen else torch.empty(0, linears[-1].in_features)


def labeller(data_model, classifier_path: str | None = None, min_accuracy: float | None = None,
             device: str | None = None) -> tuple[Labeller, float | None]:
    """(labeller, held-out accuracy): the closed-form class of a solvable data model
    (accuracy None), else the trained classifier, refused below ``min_accuracy``."""
    if data_model.kind == "solvable":
        return data_model.classify, None
    if classifier_path is None:
        raise InputError(f"data source {data_model.name!r} has no closed-form classes: cloning needs the "
                         "experiment's trained classifier (the classifier stage's checkpoint)")
    net, shape, accuracy = load_classifier(classifier_path)
    if accuracy < (min_accuracy or 0.0):
        raise InputError(f"{classifier_path}: classifier held-out accuracy {accuracy:.3f} is "
                         f"below classifier.min_accuracy={min_accuracy}; train it longer "
                         "(classifier.epochs), try classifier.arch: resnet18, or lower the threshold")
    label = classifier_labeller(net, shape, device=device or "auto")
    label.n_test = held_out_size(classifier_path)
    return label, accuracy
