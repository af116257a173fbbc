"""Data sets: the ``subset`` stage and the reader of ``data.parquet``.

Convention (DESIGN.md): pixels scaled to [0, 1], resized as the recipe says,
centred by the per-channel mean of the subset (kept in the metadata), flattened
to float32 vectors of length ``d = C*H*W``. Labels are the class 0/1 within the
subset (the position of the source class in the config's ``classes``).

Sources:
- ``gaussian_mixture``: n points of ``1/2 N(+m, s^2 I) + 1/2 N(-m, s^2 I)`` with
  ``m = mu_tilde * (1, ..., 1)`` (so ``|m|^2 = mu_tilde^2 d``), exactly balanced;
  not centred (its mean is 0 by construction).
- image sources (:mod:`diffusion_regimes.sources`): two classes (by index or
  name), all their images or ``per_class`` of each drawn with the seed, brought to
  ``size`` x ``size`` by the source's recipe (:data:`SOURCE_RECIPES`: MNIST-like
  data padded from 28 to 32 as in the paper, scikit-learn's 8x8 digits upsampled
  bilinearly to 16).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .curie_weiss import sample_spins
from .io import InputError, read_metadata
from .sources import IMAGE_SOURCES, class_index, load_source, resize  # noqa: F401 (resize re-exported)

SOURCES = ("gaussian_mixture", "hierarchical_mixture", "curie_weiss") + IMAGE_SOURCES


def gaussian_mixture(d: int, n: int, mu_tilde: float, sigma: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """n points (n, d) float32 of the symmetric two-Gaussian mixture and labels (n,)
    (1 for the +m class). Exactly n//2 points in class 1, in random order."""
    labels = torch.zeros(n, dtype=torch.int64)
    labels[: n // 2] = 1
    labels = labels[torch.randperm(n, generator=generator)]
    m = torch.full((d,), float(mu_tilde))
    x = (2 * labels[:, None] - 1).float() * m + sigma * torch.randn(n, d, generator=generator)
    return x, labels.numpy()


def hierarchical_centres(d: int, mu_tilde: float, mu_tilde2: float) -> torch.Tensor:
    """The four centres (4, d) float32 of the hierarchical mixture, class k = 2 s + c:
    ``(2s - 1) mu_tilde u + (2c - 1) mu_tilde2 v`` with u = (1, ..., 1) and v = (1, -1, 1, ...)
    (orthogonal for even d; |u| = |v| = sqrt(d))."""
    u = torch.ones(d)
    v = torch.ones(d)
    v[1::2] = -1.0
    s = torch.tensor([-1.0, -1.0, 1.0, 1.0])[:, None]
    c = torch.tensor([-1.0, 1.0, -1.0, 1.0])[:, None]
    return s * mu_tilde * u + c * mu_tilde2 * v


def hierarchical_mixture(d: int, n: int, mu_tilde: float, mu_tilde2: float, sigma: float,
                         generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """n points (n, d) float32 of the four-Gaussian hierarchical mixture and labels (n,)
    in 0..3 (super-class = label // 2, class within it = label % 2), n // 4 per class
    (the remainder in the first classes), in random order."""
    labels = (torch.arange(n) % 4)[torch.randperm(n, generator=generator)]
    centres = hierarchical_centres(d, mu_tilde, mu_tilde2)
    x = centres[labels] + sigma * torch.randn(n, d, generator=generator)
    return x, labels.numpy()


#: default side of the square images and the way to reach it, per image source
SOURCE_RECIPES = {"sklearn_digits": (16, "bilinear"), "lfw_subset": (25, "bilinear"), "mnist": (32, "pad"),
                  "fashion_mnist": (32, "pad"), "cifar10": (32, "bilinear"), "celeba": (64, "resize_crop"),
                  "imagenet_downsampled": (None, "bilinear"), "lsun": (64, "resize_crop")}
SOURCE_CHANNELS = {"sklearn_digits": 1, "lfw_subset": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "celeba": 3,
                   "imagenet_downsampled": 3, "lsun": 3}


def planned_shape(dataset: dict) -> tuple[int, int, int]:
    """(C, H, W) that the subset stage will make from a config ``dataset`` block,
    without reading the data (for describing a model before any run)."""
    kind = dataset["source"]
    if kind not in SOURCE_CHANNELS:
        raise InputError(f"dataset source {kind!r} is not an image source: it has no network")
    size = dataset.get("size") or SOURCE_RECIPES[kind][0]
    if size is None:
        raise InputError(f"dataset source {kind!r} takes the files' own size: set dataset.size (16, 32 or 64)")
    return SOURCE_CHANNELS[kind], size, size


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


def make_subset(dataset: dict, seed: int) -> tuple[pd.DataFrame | pa.Table, dict]:
    """Build the subset table (label, source_index, x) and its metadata from a
    config ``dataset`` block."""
    kind = dataset["source"]
    g = torch.Generator().manual_seed(seed)
    if kind == "gaussian_mixture":
        x, labels = gaussian_mixture(dataset["d"], dataset["n"], dataset["mu_tilde"],
                                     dataset["sigma"], g)
        meta = {"shape": [dataset["d"]], "mean": [0.0], "classes": ["-m", "+m"],
                "source": kind, "mu_tilde": dataset["mu_tilde"], "sigma": dataset["sigma"],
                "m_direction": "ones"}
        source_index = np.arange(len(labels), dtype=np.int64)
    elif kind == "hierarchical_mixture":
        x, labels = hierarchical_mixture(dataset["d"], dataset["n"], dataset["mu_tilde"], dataset["mu_tilde2"],
                                         dataset["sigma"], g)
        meta = {"shape": [dataset["d"]], "mean": [0.0], "classes": ["--", "-+", "+-", "++"], "source": kind,
                "mu_tilde": dataset["mu_tilde"], "mu_tilde2": dataset["mu_tilde2"], "sigma": dataset["sigma"]}
        source_index = np.arange(len(labels), dtype=np.int64)
    elif kind == "curie_weiss":
        x = sample_spins(dataset["n"], dataset["d"], dataset["beta"], dataset["J"], dataset["h"], g)
        labels = (x.sum(1) > 0).to(torch.int64).numpy()
        meta = {"shape": [dataset["d"]], "mean": [0.0], "classes": ["M <= 0", "M > 0"], "source": kind,
                "beta": dataset["beta"], "J": dataset["J"], "h": dataset["h"]}
        source_index = np.arange(len(labels), dtype=np.int64)
    elif kind in IMAGE_SOURCES:
        src = load_source(dataset)
        classes = [class_index(src, c) for c in dataset["classes"]]
        if classes[0] == classes[1]:
            raise InputError(f"dataset.classes {dataset['classes']} name the same class twice")
        keep, labels = select_classes(src.labels, classes, dataset.get("per_class"), g)
        size, how = SOURCE_RECIPES[kind]
        native = (src.images.shape[-1] if src.images is not None else None)
        img = src.fetch(keep, dataset.get("size") or size or native, dataset.get("resize") or how)
        mean = img.mean(dim=(0, 2, 3))
        img = img - mean[None, :, None, None]
        std = img.std(dim=(0, 2, 3)) if dataset.get("standardize") else torch.ones(img.shape[1])
        img = img / std.clamp_min(1e-12)[None, :, None, None]
        x = img.flatten(1)
        source_index = src.index[keep]
        meta = {"shape": list(img.shape[1:]), "mean": mean.tolist(), "std": std.tolist(),
                "standardized": bool(dataset.get("standardize")), "classes": list(dataset["classes"]),
                "class_names": [src.class_names[c] for c in classes], "source": kind}
    else:
        raise InputError(f"unknown dataset source {kind!r}: use one of {SOURCES}")
    x = x.contiguous().numpy().astype(np.float32)
    n, d = x.shape
    table = pa.table({
        "label": pa.array(labels.astype(np.int8)),
        "source_index": pa.array(source_index),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)})
    meta.update({"n": n, "d": d, "class_counts": np.bincount(labels, minlength=len(meta["classes"])).tolist()})
    return table, meta


def load_subset(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Read ``data.parquet``: x (n, d) float32, labels (n,) int64, metadata.

    Row groups (bounded in size by :func:`diffusion_regimes.io.write_table`) are read
    one at a time into one preallocated array, so the peak memory is the data plus
    one row group, not several copies of the data."""
    meta = read_metadata(path)
    try:
        n, d = int(meta["n"]), int(meta["d"])
        fh = pq.ParquetFile(path)
        x = np.empty((n, d), dtype=np.float32)
        labels = np.empty(n, dtype=np.int64)
        i = 0
        for group in range(fh.metadata.num_row_groups):
            part = fh.read_row_group(group, columns=["label", "x"], use_threads=False)
            rows = part.num_rows
            x[i:i + rows] = part.column("x").combine_chunks().flatten().to_numpy(
                zero_copy_only=False).reshape(rows, d)
            labels[i:i + rows] = part.column("label").to_numpy()
            i += rows
            del part
        if i != n:
            raise ValueError(f"{i} rows, metadata says {n}")
    except (KeyError, ValueError, OSError, pa.ArrowException) as err:
        raise InputError(f"{path}: malformed subset table ({err}); delete it and re-run the "
                         "subset stage") from None
    return torch.from_numpy(x), torch.from_numpy(labels), meta


def image_shape(meta: dict) -> tuple[int, ...]:
    """(C, H, W) of an image subset from its metadata; raises for vector data."""
    shape = tuple(meta["shape"])
    if len(shape) != 3:
        raise InputError(f"data of shape {shape} are not images: a network score needs images")
    return shape


def gm_direction(meta: dict) -> torch.Tensor:
    """The mixture's centre m (d,) from a gaussian_mixture subset's metadata."""
    return torch.full((int(meta["d"]),), float(meta["mu_tilde"]))

