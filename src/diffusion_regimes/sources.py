"""Image data sets behind one interface: a source name -> labelled images in [0, 1].

Each reader reads the format the data set is distributed in, with the
ecosystem's own reader where there is one, and never downloads:

- ``sklearn_digits``: scikit-learn's 8x8 digits (shipped with scikit-learn).
- ``lfw_subset``: scikit-image's 100 faces and 100 non-faces, 25x25 (shipped with
  scikit-image).
- ``mnist``, ``fashion_mnist``: the IDX files (``train-images-idx3-ubyte`` and
  ``train-labels-idx1-ubyte``, plain or ``.gz``) read by torchvision's MNIST
  readers. ``fashion_mnist`` defaults to Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``).
- ``celeba``: the aligned images ``img_align_celeba/*.jpg`` and
  ``list_attr_celeba.txt``; the class is one attribute (``Male`` by default:
  class 0 female, 1 male). torchvision's CelebA class needs four more annotation
  files, so the attribute file is parsed here and only the selected images are
  decoded (PIL), each resized (shorter side) and centre-cropped to ``size``.
- ``imagenet_downsampled``: the ``train_data_batch_*`` files (pickles or ``.npz``) of the 16x16
  and 32x32 downsampled ImageNet, pickles read with an unpickler that admits numpy
  arrays only, archives with ``allow_pickle=False``; class names from ``map_clsloc.txt`` in the same folder.
- ``lsun``: one scene category per class, from the distributed LMDB databases
  ``{category}_train_lmdb`` (read with the ``lmdb`` package; torchvision's LSUN
  class writes a key cache into the working directory) or from folders of images;
  only the selected images are decoded, resized and centre-cropped.
- ``cifar10``: the python pickles ``cifar-10-batches-py/data_batch_1..5`` and
  ``batches.meta``, read with the numpy-only unpickler (torchvision's CIFAR10 class
  uses a plain ``pickle.load``, which a crafted batch could use to run code); any
  faithful copy loads (no md5 check of the official files).

Every pickled data file (CIFAR-10, the downsampled ImageNet) goes through the
numpy-only unpickler: numpy arrays and plain containers, nothing that can run code.

Each reader returns a :class:`LabelledImages`; the image data models
(:mod:`diffusion_regimes.datamodels.images`, one class per source) select the
classes and per-class counts, resize and centre.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .io import one_line

FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
WHERE = {
    "mnist": "http://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST(root, download=True) elsewhere)",
    "fashion_mnist": "Debian's package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or "
                     "https://github.com/zalandoresearch/fashion-mnist",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html (the python version, cifar-10-python.tar.gz)",
    "celeba": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (img_align_celeba and list_attr_celeba.txt)",
    "lsun": "https://github.com/fyu/lsun (download.py -c conference_room, church_outdoor; unzip the LMDBs)",
    "imagenet_downsampled": "https://image-net.org/download-images (Downsampled ImageNet 16x16 or 32x32, "
                            "train_data_batch_1..10, with map_clsloc.txt for class names)",
}


@dataclass
class LabelledImages:
    """``labels`` (N,) int64 class indices of the source; ``index`` (N,) int64 positions
    in the source; ``class_names`` by index; ``images`` (N, C, H, W) float32 in [0, 1]
    for sources read whole, or ``loader(positions) -> list of (C, h, w)`` for sources
    read image by image (only the selected images are decoded)."""

    labels: np.ndarray
    index: np.ndarray
    class_names: list[str]
    images: torch.Tensor | None = None
    loader: Callable[[np.ndarray], list[torch.Tensor]] | None = None

    def fetch(self, positions: np.ndarray, size: int, how: str) -> torch.Tensor:
        """The images at ``positions`` brought to (len, C, size, size) by recipe ``how``."""
        if self.images is not None:
            return resize(self.images[torch.as_tensor(positions)], size, how)
        return torch.cat([resize(img[None], size, how) for img in self.loader(positions)])


def resize(images: torch.Tensor, size: int, how: str) -> torch.Tensor:
    """Images (N, C, h, w) to (N, C, size, size): ``pad`` with zeros around (MNIST
    28 -> 32, as the paper), ``bilinear`` resampling of square images, or
    ``resize_crop`` (shorter side to ``size``, then the centre); values stay in [0, 1]."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if how == "pad":
        if size < h or size < w:
            raise InputError(f"cannot pad {h}x{w} images to {size}: use dataset.resize: bilinear")
        top, left = (size - h) // 2, (size - w) // 2
        return torch.nn.functional.pad(images, (left, size - w - left, top, size - h - top))
    if how == "resize_crop":
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        images = torch.nn.functional.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False,
                                                 antialias=scale < 1).clamp(0.0, 1.0)
        top, left = (nh - size) // 2, (nw - size) // 2
        return images[..., top:top + size, left:left + size]
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                           align_corners=False, antialias=size < min(h, w)).clamp(0.0, 1.0)




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
            try:
                with gzip.open(packed, "rb") as src, open(raw / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError, zlib.error) as err:  # not gzip, truncated, corrupt
                raise InputError(f"{packed}: not a complete gzip file ({one_line(err)}); get it again from "
                                 f"{WHERE[source]}") from None
        else:
            raise _missing(source, root / name, "IDX file (plain or .gz)")
    return raw


def read_mnist_like(source: str, root: Path) -> LabelledImages:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    if not root.is_dir():
        raise _missing(source, root, "folder")
    with tempfile.TemporaryDirectory() as tmp:
        raw = _idx_files(source, root, Path(tmp))
        try:
            images = read_image_file(str(raw / "train-images-idx3-ubyte"))
            labels = read_label_file(str(raw / "train-labels-idx1-ubyte"))
        except Exception as err:  # torchvision's readers: AssertionError, RuntimeError, ValueError, ...
            raise InputError(f"{root}: not valid MNIST IDX files ({err or type(err).__name__}); get them from "
                             f"{WHERE[source]}") from None
    if len(images) != len(labels):
        raise InputError(f"{root}: {len(images)} images but {len(labels)} labels in the IDX files")
    names = [str(i) for i in range(10)] if source == "mnist" else FASHION_MNIST_CLASSES
    return LabelledImages(labels.numpy().astype(np.int64), np.arange(len(labels), dtype=np.int64), names,
                          images=images[:, None].float() / 255.0)


def read_cifar10(root: Path) -> LabelledImages:
    """CIFAR-10's python version: ``cifar-10-batches-py/data_batch_1..5`` (pickles of ``data``
    (N, 3072) uint8 in CHW order and ``labels``) and ``batches.meta`` (``label_names``), all
    read with the numpy-only unpickler, so a crafted batch cannot run code."""
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{k}" for k in range(1, 6)]
    for f in names + ["batches.meta"]:
        if not (folder / f).exists():
            raise _missing("cifar10", folder / f, "CIFAR-10 python batch")
    meta = _unpickle(folder / "batches.meta", "CIFAR-10 batches.meta", "cifar10")
    try:
        classes = [str(c) for c in meta["label_names"]]
    except (KeyError, TypeError) as err:
        raise InputError(f"{folder / 'batches.meta'}: no label_names ({one_line(err)}); get it from "
                         f"{WHERE['cifar10']}") from None
    chunks, labels = [], []
    for name in names:
        batch = _unpickle(folder / name, "CIFAR-10 python batch", "cifar10")
        try:
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(batch["labels"], dtype=np.int64)
            if len(lab) != len(data):
                raise ValueError(f"{len(data)} images but {len(lab)} labels")
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{folder / name}: not a CIFAR-10 python batch ({one_line(err)}); get it from "
                             f"{WHERE['cifar10']}") from None
        chunks.append(data)
        labels.append(lab)
    images = torch.from_numpy(np.concatenate(chunks)).float() / 255.0
    lab = np.concatenate(labels)
    return LabelledImages(lab, np.arange(len(lab), dtype=np.int64), classes, images=images)


def read_celeba(root: Path, attribute: str) -> LabelledImages:
    """CelebA's aligned images (``img_align_celeba/*.jpg``) labelled by one attribute of
    ``list_attr_celeba.txt`` (class 0: -1, class 1: +1; e.g. ``Male``: female, male)."""
    attr_file, folder = root / "list_attr_celeba.txt", root / "img_align_celeba"
    if not attr_file.exists():
        raise _missing("celeba", attr_file, "attribute file")
    if not folder.is_dir():
        raise _missing("celeba", folder, "folder of aligned images")
    lines = _read_lines(attr_file)
    try:
        count = int(lines[0].split()[0])
        names = lines[1].split()
        col = names.index(attribute)
        rows = [ln.split() for ln in lines[2:] if ln.strip()]
        files = [r[0] for r in rows]
        values = np.array([int(r[1 + col]) for r in rows])
    except (IndexError, ValueError):
        raise InputError(f"{attr_file}: not CelebA's attribute format (a count, a header of attribute names "
                         f"including {attribute!r}, then 'file.jpg' and one +-1 per attribute)") from None
    if len(files) != count:
        raise InputError(f"{attr_file}: says {count} images but lists {len(files)}")

    def load(positions: np.ndarray) -> list[torch.Tensor]:
        out = []
        for p in positions:
            path = folder / files[p]
            if not path.exists():
                raise _missing("celeba", path, "aligned image")
            out.append(_decode(_read_bytes(path), str(path)))
        return out

    return LabelledImages((values > 0).astype(np.int64), np.arange(len(files), dtype=np.int64),
                          [f"not {attribute}", attribute], loader=load)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocols 0-2 of Python 3 use it for bytes (latin-1 text), and
    nothing more: no other codec is looked up."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is not allowed in a data file")
    return text.encode("latin-1")


def _frombuffer(buffer, dtype, shape, order):
    """``numpy._core.numeric._frombuffer`` as protocol 5 uses it for arrays, refusing object
    arrays (their items would be arbitrary objects)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise pickle.UnpicklingError("an object array is not allowed in a data file")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only, in every encoding numpy and Python 3
    write (protocols 0-5; bytes of protocols 0-2 through a latin-1-only ``_codecs.encode``,
    arrays of protocol 5 through a ``_frombuffer`` that refuses object arrays): a data file
    cannot run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}
    #: safe stand-ins for the functions the other encodings name
    REPLACED = {("_codecs", "encode"): _latin1_encode, ("numpy._core.numeric", "_frombuffer"): _frombuffer,
                ("numpy.core.numeric", "_frombuffer"): _frombuffer}

    def find_class(self, module: str, name: str):
        if (module, name) in self.REPLACED:
            return self.REPLACED[module, name]
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a data file")
        return super().find_class(module, name)


def _unpickle(path: Path, what: str, source: str):
    """A pickled data file read with :class:`_NumpyOnlyUnpickler` (latin-1 strings, as the
    data sets' Python 2 pickles need); anything else is a one-line :class:`InputError`."""
    try:
        with open(path, "rb") as fh:
            return _NumpyOnlyUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError,
            ImportError, MemoryError, OSError) as err:
        raise InputError(f"{path}: not a {what} ({one_line(err)}); get it from {WHERE[source]}") from None


def _batch_number(path: Path) -> int:
    """The k of ``train_data_batch_k`` or ``train_data_batch_k.npz``."""
    tail = path.name.removesuffix(".npz").rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _read_npz(path: Path, what: str, source: str) -> dict:
    """A numpy ``.npz`` archive read without pickles (``allow_pickle=False``: an object array
    is refused, nothing can run code); every numpy or zip error is one line naming the file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as err:  # BadZipFile, ValueError (object arrays), OSError, EOFError, ...
        raise InputError(f"{path}: not a {what} ({one_line(err)}); get it from {WHERE[source]}") from None


def _read_lines(path: Path) -> list[str]:
    """A text file's lines (UTF-8); a file in another encoding is one line naming it."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None


def read_imagenet_downsampled(root: Path) -> LabelledImages:
    """Downsampled ImageNet (Chrabaszcz et al. 2017): ``train_data_batch_k`` pickles or
    ``train_data_batch_k.npz`` archives (both as distributed) with ``data`` (N, 3*H*W) uint8,
    colour planes in turn, and ``labels`` 1..1000; class k (0-based) is label k + 1, named by
    ``map_clsloc.txt`` (``wnid label name``) when the folder has it."""
    what, source = "downsampled-ImageNet batch", "imagenet_downsampled"
    files = sorted((p for p in root.glob("train_data_batch_*") if _batch_number(p) >= 0
                    and (p.suffix == ".npz" or not p.suffix)), key=lambda p: (_batch_number(p), p.suffix))
    numbers = [_batch_number(p) for p in files]
    if len(set(numbers)) != len(numbers):
        twice = sorted({k for k in numbers if numbers.count(k) > 1})
        raise InputError(f"{root}: train_data_batch_{twice[0]} is there both pickled and as .npz; keep one")
    if not files:
        raise _missing(source, root / "train_data_batch_1", "batch (pickled or .npz)")
    chunks, labels = [], []
    for path in files:
        batch = _read_npz(path, what, source) if path.suffix == ".npz" else _unpickle(path, what, source)
        try:
            data, lab = np.asarray(batch["data"], dtype=np.uint8), np.asarray(batch["labels"], dtype=np.int64)
            if data.ndim != 2 or lab.shape != (len(data),):
                raise ValueError(f"data {data.shape} and labels {lab.shape} are not (N, 3*H*W) and (N,)")
            if len(lab) and not (1 <= lab.min() and lab.max() <= 1000):
                raise ValueError(f"labels {lab.min()}..{lab.max()} are not 1..1000")
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise InputError(f"{path}: not a {what} ({one_line(err)}); get it from {WHERE[source]}") from None
        chunks.append(data)
        labels.append(lab - 1)
    widths = {c.shape[1] for c in chunks}
    if len(widths) != 1:
        raise InputError(f"{root}: the batches have rows of {sorted(widths)} values (several resolutions "
                         "in one folder); keep one resolution per data_root")
    data = np.concatenate(chunks)
    side = int(round((data.shape[1] / 3) ** 0.5))
    if 3 * side * side != data.shape[1]:
        raise InputError(f"{root}: rows of {data.shape[1]} values are not 3 square colour planes")
    names = [str(k + 1) for k in range(1000)]
    map_file = root / "map_clsloc.txt"
    if map_file.exists():
        for line in _read_lines(map_file):
            parts = line.split()
            if len(parts) >= 3 and parts[1].isdigit() and 1 <= int(parts[1]) <= 1000:
                names[int(parts[1]) - 1] = parts[2]
    images = torch.from_numpy(data).view(-1, 3, side, side).float() / 255.0
    lab = np.concatenate(labels)
    return LabelledImages(lab, np.arange(len(lab), dtype=np.int64), names, images=images)


#: the most pixels an encoded image may declare (width x height): its header is read first and a
#: larger one is refused before decoding (64 M pixels decode to at most about 0.8 GB here)
MAX_IMAGE_PIXELS = 64_000_000


def _decode(blob: bytes | None, where: str) -> torch.Tensor:
    """An encoded image (JPEG, WebP, PNG) as (3, h, w) float32 in [0, 1]. The declared size
    is checked against :data:`MAX_IMAGE_PIXELS` before anything is decoded; every error of
    the decoder (truncated, corrupt, hostile file) is one line naming the image."""
    import io

    from PIL import Image

    def too_large(declared: str) -> InputError:
        return InputError(f"{where}: the image declares {declared} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                          "allowed (diffusion_regimes.sources.MAX_IMAGE_PIXELS); shrink it first or leave it out")

    if not blob:
        raise InputError(f"{where}: empty or missing image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked here
            with Image.open(io.BytesIO(blob)) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise too_large(f"{w} x {h}")
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except InputError:
        raise
    except Image.DecompressionBombError as err:  # PIL's own limit, met while reading the header
        found = re.search(r"\d+", str(err))
        raise too_large(f"{int(found.group()):,}" if found else "too many") from None
    except Exception as err:  # any decoder failure: OSError, SyntaxError, DecompressionBombError, ...
        raise InputError(f"{where}: cannot decode this image ({type(err).__name__}: {one_line(err)})") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"{path}: cannot read this image ({one_line(err)})") from None


def _lmdb_keys(db: Path) -> list[bytes]:
    """The keys of an LMDB database (an LSUN category); a damaged database is one line."""
    import lmdb

    try:
        env = lmdb.open(str(db), readonly=True, lock=False, readahead=False, meminit=False)
        with env.begin() as txn:
            keys = [key for key, _ in txn.cursor()]
        env.close()
    except lmdb.Error as err:
        raise InputError(f"{db}: not a readable LMDB database ({one_line(err)}); get it again from "
                         f"{WHERE['lsun']}") from None
    return keys


def read_lsun(root: Path, categories: list) -> LabelledImages:
    """LSUN scenes, one category per class: the distributed LMDB databases
    ``{category}_train_lmdb`` (keys -> encoded images), or folders ``{category}/`` of
    image files. Only the selected images are decoded."""
    entries: list[tuple[str, object]] = []  # (where, key or path)
    labels = []
    for k, cat in enumerate(map(str, categories)):
        db, folder = root / f"{cat}_train_lmdb", root / cat
        if db.is_dir():
            keys = _lmdb_keys(db)
            entries += [(str(db), key) for key in keys]
            labels += [k] * len(keys)
        elif folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".webp", ".png"))
            entries += [(str(folder), p) for p in files]
            labels += [k] * len(files)
        else:
            raise _missing("lsun", db, f"LMDB database (or folder {folder.name}/)")

    def load(positions: np.ndarray) -> list[torch.Tensor]:
        import lmdb

        out, envs = [], {}
        for p in positions:
            where, item = entries[p]
            if isinstance(item, Path):
                out.append(_decode(_read_bytes(item), str(item)))
                continue
            try:
                if where not in envs:
                    envs[where] = lmdb.open(where, readonly=True, lock=False, readahead=False, meminit=False)
                with envs[where].begin() as txn:
                    blob = txn.get(item)
            except lmdb.Error as err:
                raise InputError(f"{where}: not a readable LMDB database ({one_line(err)})") from None
            out.append(_decode(blob, f"{where}[{item!r}]"))
        for env in envs.values():
            env.close()
        return out

    return LabelledImages(np.asarray(labels, dtype=np.int64), np.arange(len(labels), dtype=np.int64),
                          [str(c) for c in categories], loader=load)


def read_lfw_subset() -> LabelledImages:
    """scikit-image's ``lfw_subset``: 100 faces then 100 non-faces, 25x25 grey, in [0, 1]."""
    from skimage.data import lfw_subset

    images = torch.as_tensor(lfw_subset(), dtype=torch.float32)[:, None]
    labels = (np.arange(len(images)) >= 100).astype(np.int64)
    return LabelledImages(labels, np.arange(len(images), dtype=np.int64), ["face", "non-face"], images=images)


def read_sklearn_digits() -> LabelledImages:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    return LabelledImages(bunch.target.astype(np.int64), np.arange(len(bunch.target), dtype=np.int64),
                          [str(i) for i in range(10)], images=images)


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
