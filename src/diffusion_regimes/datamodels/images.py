"""Image data sources: one class per source, each with its reader
(:mod:`diffusion_regimes.sources`), its recipe (default side and how to reach it),
its channels and the paper's Lambda where Table 1 has one.

The subset of an image source: two classes (by index or name), all their images or
``per_class`` of each drawn with the seed (balanced, in source order), of which a
fraction ``holdout`` of each class is held out as the reference set of the
memorisation null; brought to ``size`` x ``size`` by the recipe, pixels in [0, 1]
(or ``pixel_range``: the range a model was trained on, e.g. [-1, 1]) centred by the
per-channel mean of the training split (kept in the metadata; ``centre: false`` keeps
the pixels uncentred, the mean recorded as 0) and optionally divided by its per-channel
std, flattened to float32 vectors of length ``d = C*H*W``. The draw (``per_class`` and
the held-out split) uses the subset stage's generator: ``split_seed`` where given.
Labels are the position of the source class in the config's ``classes``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .. import sources
from ..errors import InputError
from . import DataModel, Subset, register


def holdout_split(labels: np.ndarray, fraction: float, generator: torch.Generator) -> np.ndarray:
    """Boolean mask (n,) of the held-out images: ``round(fraction * count)`` of each class,
    drawn with the generator (balanced, so the reference has the classes of the subset)."""
    held = np.zeros(len(labels), dtype=bool)
    if fraction <= 0:
        return held
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        k = int(round(fraction * len(idx)))
        held[idx[torch.randperm(len(idx), generator=generator)[:k].numpy()]] = True
    return held


def select_classes(labels: np.ndarray, classes: list[int], per_class: int | None,
                   generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the kept images, in the source's order, and their class 0/1 in
    ``classes``: all images of each class, or ``per_class`` of each drawn without
    replacement (balanced, deterministic for a given generator)."""
    picks, subset_labels = [], []
    for k, c in enumerate(classes):
        idx = np.nonzero(labels == c)[0]
        if per_class is not None:
            if len(idx) < per_class:
                raise InputError(f"class {c} has {len(idx)} images, fewer than dataset.per_class={per_class}")
            idx = idx[torch.randperm(len(idx), generator=generator)[:per_class].numpy()]
        picks.append(idx)
        subset_labels.append(np.full(len(idx), k, dtype=np.int64))
    keep, labels = np.concatenate(picks), np.concatenate(subset_labels)
    order = np.argsort(keep, kind="stable")
    return keep[order], labels[order]


def pixel_range(dataset: dict) -> tuple[float, float]:
    """(lo, hi): the range a dataset block brings pixels to, [0, 1] by default."""
    lo, hi = (float(v) for v in dataset.get("pixel_range") or (0.0, 1.0))
    if not hi > lo:
        raise InputError(f"dataset.pixel_range {[lo, hi]}: the first value must be below the second "
                         "(e.g. [0, 1] or [-1, 1])")
    return lo, hi


class ImageSource(DataModel):
    """An image source: ``read`` gives all its labelled images; the rest is shared."""

    kind = "images"
    #: channels of the images, default side (None: the files' own) and the recipe to reach it
    channels: ClassVar[int] = 1
    size: ClassVar[int | None] = 32
    recipe: ClassVar[str] = "bilinear"
    #: folder read when dataset.data_root is null (None: data_root is required)
    default_root: ClassVar[str | None] = None
    #: Lambda of the paper's Table 1 (Biroli et al. 2024) by image side
    paper_lambda: ClassVar[dict[int, float]] = {}

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        raise NotImplementedError

    @classmethod
    def root(cls, dataset: dict) -> Path:
        """The folder of the source's files: ``dataset.data_root`` or the default."""
        root = dataset.get("data_root") or cls.default_root
        if root is None:
            raise InputError(f"dataset source {cls.name!r} needs dataset.data_root (the folder of its files); "
                             f"get the data from {sources.WHERE[cls.name]}")
        return Path(root).expanduser()

    @classmethod
    def planned_shape(cls, dataset: dict) -> tuple[int, int, int]:
        size = dataset.get("size") or cls.size
        if size is None:
            raise InputError(f"dataset source {cls.name!r} takes the files' own size: set dataset.size (16, 32 or 64)")
        return (1 if dataset.get("grayscale") else cls.channels), size, size

    @classmethod
    def sample(cls, dataset: dict, generator) -> Subset:
        src = cls.read(dataset)
        classes = [sources.class_index(src, c) for c in dataset["classes"]]
        if classes[0] == classes[1]:
            raise InputError(f"dataset.classes {dataset['classes']} name the same class twice")
        keep, labels = select_classes(src.labels, classes, dataset.get("per_class"), generator)
        held = holdout_split(labels, dataset.get("holdout", 0.0), generator)
        native = src.images.shape[-1] if src.images is not None else None
        img = src.fetch(keep, dataset.get("size") or cls.size or native, dataset.get("resize") or cls.recipe)
        if dataset.get("grayscale") and img.shape[1] == 3:  # ITU-R BT.601 luma
            img = (img * torch.tensor([0.299, 0.587, 0.114], dtype=img.dtype)[None, :, None, None]).sum(1, keepdim=True)
        if held.all():
            raise InputError(f"dataset.holdout={dataset.get('holdout')} holds out every image: lower it")
        train = torch.as_tensor(~held)
        lo, hi = pixel_range(dataset)
        img = lo + (hi - lo) * img
        # the training split's statistics, for both splits
        mean = img[train].mean(dim=(0, 2, 3)) if dataset.get("centre", True) else torch.zeros(img.shape[1])
        img = img - mean[None, :, None, None]
        std = img[train].std(dim=(0, 2, 3)) if dataset.get("standardize") else torch.ones(img.shape[1])
        img = img / std.clamp_min(1e-12)[None, :, None, None]
        meta = {"shape": list(img.shape[1:]), "mean": mean.tolist(), "std": std.tolist(),
                "standardized": bool(dataset.get("standardize")), "classes": list(dataset["classes"]),
                "class_names": [src.class_names[c] for c in classes], "source": cls.name,
                "holdout": float(dataset.get("holdout", 0.0)), "pixel_range": [lo, hi],
                "centred": bool(dataset.get("centre", True))}
        index = np.asarray(src.index[keep])
        ref = Subset(img[~train].flatten(1), labels[held], index[held], dict(meta))
        return Subset(img[train].flatten(1), labels[~held], index[~held], meta, reference=ref)

    def reference_lambda(self) -> float | None:
        return self.paper_lambda.get(self.meta["shape"][-1])


@register
class SklearnDigits(ImageSource):
    """scikit-learn's 8x8 digits, upsampled bilinearly to 16 (at 8x8 Lambda < 1)."""

    name, size = "sklearn_digits", 16

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        return sources.read_sklearn_digits()


@register
class LfwSubset(ImageSource):
    """scikit-image's 100 faces and 100 non-faces, 25x25."""

    name, size = "lfw_subset", 25

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        return sources.read_lfw_subset()


@register
class Mnist(ImageSource):
    """MNIST's IDX files, padded from 28 to 32 as in the paper."""

    name, recipe = "mnist", "pad"
    paper_lambda = {32: 7.66}

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        return sources.read_mnist_like(cls.name, cls.root(dataset))


@register
class FashionMnist(Mnist):
    """Fashion-MNIST's IDX files (Debian's dataset-fashion-mnist by default), padded to 32."""

    name, default_root = "fashion_mnist", sources.FASHION_MNIST_DEBIAN
    paper_lambda = {}


@register
class Cifar10(ImageSource):
    """CIFAR-10's python batches, 32x32 colour."""

    name, channels = "cifar10", 3
    paper_lambda = {32: 16.72}

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        return sources.read_cifar10(cls.root(dataset))


@register
class CelebA(ImageSource):
    """CelebA's aligned images, classed by one attribute, resized and centre-cropped to 64."""

    name, channels, size, recipe = "celeba", 3, 64, "resize_crop"
    paper_lambda = {64: 116.72}

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        return sources.read_celeba(cls.root(dataset), dataset.get("attribute") or "Male")


@register
class ImagenetDownsampled(ImageSource):
    """The 16x16 or 32x32 downsampled ImageNet (numpy-only unpickler); the files' own size."""

    name, channels, size = "imagenet_downsampled", 3, None
    paper_lambda = {16: 3.05, 32: 12.11}

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        return sources.read_imagenet_downsampled(cls.root(dataset))


@register
class Lsun(ImageSource):
    """LSUN scenes, one category per class (LMDB databases or folders), resized and cropped to 64."""

    name, channels, size, recipe = "lsun", 3, 64, "resize_crop"
    paper_lambda = {64: 60.52}

    @classmethod
    def read(cls, dataset: dict) -> sources.LabelledImages:
        return sources.read_lsun(cls.root(dataset), list(dataset["classes"]))
