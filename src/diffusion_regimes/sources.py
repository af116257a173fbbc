"""Image data sets behind one interface: a source name -> labelled images in [0, 1].

Each reader reads the format the data set is distributed in, with the
ecosystem's own reader where there is one, and never downloads:

- ``sklearn_digits``: scikit-learn's 8x8 digits (shipped with scikit-learn).
- ``mnist``, ``fashion_mnist``: the IDX files (``train-images-idx3-ubyte`` and
  ``train-labels-idx1-ubyte``, plain or ``.gz``) read by torchvision's MNIST
  readers. ``fashion_mnist`` defaults to Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``).
- ``cifar10``: the python pickles ``cifar-10-batches-py/data_batch_1..5`` and
  ``batches.meta`` read by torchvision's CIFAR10 class (its md5 check of the
  official files is skipped so that any faithful copy loads).

:func:`load_source` returns a :class:`LabelledImages`; selection of classes and
per-class counts, resizing and centring are done by :mod:`diffusion_regimes.data`.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .io import InputError

FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
WHERE = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST(root, download=True) elsewhere)",
    "fashion_mnist": "Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or "
                     "https://github.com/zalandoresearch/fashion-mnist",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (the python version, cifar-10-python.tar.gz)",
}


@dataclass
class LabelledImages:
    """``images`` (N, C, H, W) float32 in [0, 1]; ``labels`` (N,) int64 class indices of
    the source; ``index`` (N,) int64 positions in the source; ``class_names`` by index."""

    images: torch.Tensor
    labels: np.ndarray
    index: np.ndarray
    class_names: list[str]


def _missing(source: str, path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what} not found for dataset source {source!r}; get it from {WHERE[source]} "
                      "and set dataset.data_root to its folder")


def _idx_files(source: str, root: Path, tmp: Path) -> Path:
    """A folder laid out as torchvision's MNIST expects (``raw/`` with plain IDX files),
    made in ``tmp`` from the plain or gzipped files found in ``root``."""
    raw = tmp / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        plain, packed = root / name, root / f"{name}.gz"
        if plain.exists():
            os.symlink(plain.resolve(), raw / name)
        elif packed.exists():
            with gzip.open(packed, "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            raise _missing(source, root / name, "IDX file (plain or .gz)")
    return raw


def _mnist_like(source: str, root: Path) -> LabelledImages:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    if not root.is_dir():
        raise _missing(source, root, "folder")
    with tempfile.TemporaryDirectory() as tmp:
        raw = _idx_files(source, root, Path(tmp))
        try:
            images = read_image_file(str(raw / "train-images-idx3-ubyte"))
            labels = read_label_file(str(raw / "train-labels-idx1-ubyte"))
        except (AssertionError, RuntimeError, ValueError) as err:
            raise InputError(f"{root}: not valid MNIST IDX files ({err or type(err).__name__}); get them from "
                             f"{WHERE[source]}") from None
    if len(images) != len(labels):
        raise InputError(f"{root}: {len(images)} images but {len(labels)} labels in the IDX files")
    names = [str(i) for i in range(10)] if source == "mnist" else FASHION_MNIST_CLASSES
    return LabelledImages(images[:, None].float() / 255.0, labels.numpy().astype(np.int64),
                          np.arange(len(labels), dtype=np.int64), names)


def _cifar10(root: Path) -> LabelledImages:
    from torchvision.datasets import CIFAR10

    class _Copy(CIFAR10):  # any faithful copy: existence instead of the official md5 sums
        def _check_integrity(self) -> bool:
            return all((Path(self.root) / self.base_folder / f).exists() for f, _ in self.train_list)

        def _load_meta(self) -> None:
            import pickle

            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    folder = root / CIFAR10.base_folder
    for f in [name for name, _ in CIFAR10.train_list] + [CIFAR10.meta["filename"]]:
        if not (folder / f).exists():
            raise _missing("cifar10", folder / f, "CIFAR-10 python batch")
    try:
        ds = _Copy(str(root), train=True, download=False)
    except Exception as err:  # torchvision raises several types for malformed pickles
        raise InputError(f"{folder}: not valid CIFAR-10 python batches ({type(err).__name__}: {err}); get them "
                         f"from {WHERE['cifar10']}") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).float() / 255.0
    labels = np.asarray(ds.targets, dtype=np.int64)
    return LabelledImages(images, labels, np.arange(len(labels), dtype=np.int64), list(ds.classes))


def _sklearn_digits() -> LabelledImages:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    return LabelledImages(images, bunch.target.astype(np.int64), np.arange(len(bunch.target), dtype=np.int64),
                          [str(i) for i in range(10)])


IMAGE_SOURCES = ("sklearn_digits", "mnist", "fashion_mnist", "cifar10")


def load_source(dataset: dict) -> LabelledImages:
    """All images of a source named by ``dataset['source']`` (root: ``dataset['data_root']``)."""
    source = dataset["source"]
    if source == "sklearn_digits":
        return _sklearn_digits()
    default_root = FASHION_MNIST_DEBIAN if source == "fashion_mnist" else None
    root = dataset.get("data_root") or default_root
    if root is None:
        raise InputError(f"dataset source {source!r} needs dataset.data_root (the folder of its files); "
                         f"get the data from {WHERE[source]}")
    root = Path(root).expanduser()
    if source in ("mnist", "fashion_mnist"):
        return _mnist_like(source, root)
    if source == "cifar10":
        return _cifar10(root)
    raise InputError(f"unknown dataset source {source!r}: use one of {IMAGE_SOURCES}")


def class_index(source: LabelledImages, name: int | str) -> int:
    """Index of a class given by index or by name (case-insensitive, e.g. 'horse', 'Trouser')."""
    if isinstance(name, int) and not isinstance(name, bool):
        if not 0 <= name < len(source.class_names):
            raise InputError(f"class {name} out of range: this source has classes 0..{len(source.class_names) - 1}")
        return name
    lower = [c.lower() for c in source.class_names]
    if str(name).lower() not in lower:
        raise InputError(f"unknown class {name!r}: this source has {source.class_names}")
    return lower.index(str(name).lower())
