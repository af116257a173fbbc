"""Readers of the distributed formats, on small files written here in those formats."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_regimes.data import make_subset
from diffusion_regimes.datamodels import data_model
from diffusion_regimes.io import InputError
from diffusion_regimes.seeding import generator
from diffusion_regimes.sources import FASHION_MNIST_DEBIAN, resize


def load_source(dataset: dict):
    return data_model(dataset["source"]).read(dataset)


def subset(dataset: dict, seed: int):
    """The training table and its metadata (image sources make their reference themselves)."""
    table, meta, _, _ = make_subset(dataset, generator(seed))
    return table, meta


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, packed: bool) -> None:
    """MNIST's IDX format: big-endian magic (0x0803 / 0x0801), sizes, then uint8 data."""
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    blobs = {"train-images-idx3-ubyte": struct.pack(">IIII", 0x0803, n, h, w) + images.astype(np.uint8).tobytes(),
             "train-labels-idx1-ubyte": struct.pack(">II", 0x0801, n) + labels.astype(np.uint8).tobytes()}
    for name, blob in blobs.items():
        if packed:
            with gzip.open(folder / f"{name}.gz", "wb") as fh:
                fh.write(blob)
        else:
            (folder / name).write_bytes(blob)


def write_cifar(root: Path, images: np.ndarray, labels: np.ndarray, protocol: int | None = None) -> None:
    """CIFAR-10's python pickles: data (N, 3072) uint8 in CHW order, labels list."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names}, fh, protocol=protocol)
    for k, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        batch = {"data": images[part].reshape(len(part), -1), "labels": labels[part].tolist(),
                 "batch_label": f"batch {k + 1}".encode()}
        with open(folder / f"data_batch_{k + 1}", "wb") as fh:
            pickle.dump(batch, fh, protocol=protocol)


@pytest.mark.parametrize("packed", [False, True])
def test_mnist_idx_reader_and_recipe(tmp_path, packed):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60, 28, 28))
    labels = np.arange(60) % 10
    write_idx(tmp_path, images, labels, packed)
    src = load_source({"source": "mnist", "data_root": str(tmp_path)})
    assert src.images.shape == (60, 1, 28, 28) and src.images.max() <= 1.0
    np.testing.assert_array_equal(src.labels, labels)
    np.testing.assert_allclose(src.images[7, 0].numpy(), images[7] / 255.0, rtol=1e-6)
    table, meta = subset({"source": "mnist", "data_root": str(tmp_path), "classes": [1, 8], "per_class": 4}, 5)
    assert meta["shape"] == [1, 32, 32] and meta["class_counts"] == [4, 4]  # padded 28 -> 32, balanced
    again, _ = subset({"source": "mnist", "data_root": str(tmp_path), "classes": [1, 8], "per_class": 4}, 5)
    assert table.equals(again)  # deterministic for a seed
    assert set(np.asarray(table.column("source_index")) % 10) == {1, 8}


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_cifar10_batches_in_every_pickle_protocol_numpy_writes(tmp_path, protocol):
    """Batches re-saved from Python 3 (bytes through _codecs.encode at protocols 0-2, arrays
    through _frombuffer at protocol 5) are valid data: read, without running code."""
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(20, 3, 32, 32), dtype=np.uint8)
    write_cifar(tmp_path, images, np.arange(20) % 10, protocol)
    src = load_source({"source": "cifar10", "data_root": str(tmp_path)})
    np.testing.assert_allclose(src.images[5].numpy(), images[5] / 255.0, rtol=1e-6)


class _Encoded:
    """Pickles as a call of the functions the other encodings name, with arguments they never carry."""

    def __init__(self, payload: str):
        self.payload = payload

    def __reduce__(self):
        import codecs

        from numpy._core.numeric import _frombuffer

        if self.payload == "codec":  # another codec than latin-1
            return codecs.encode, ("data", "rot13")
        return _frombuffer, (bytearray(8), np.dtype(object), (1,), "C")  # an object array


@pytest.mark.parametrize("payload", ["codec", "object array"])
def test_the_other_encodings_stay_closed(tmp_path, payload):
    """The stand-ins for _codecs.encode and _frombuffer admit latin-1 text and plain arrays only."""
    from diffusion_regimes.errors import InputError

    write_cifar(tmp_path, np.zeros((10, 3, 32, 32), np.uint8), np.arange(10))
    blob = pickle.dumps({"data": _Encoded(payload), "labels": [0]}, protocol=5)
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(blob)
    with pytest.raises(InputError, match="not allowed in a data file|not a"):
        load_source({"source": "cifar10", "data_root": str(tmp_path)})


def test_cifar10_pickle_reader_by_class_names(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(50, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(50) % 10
    write_cifar(tmp_path, images, labels)
    src = load_source({"source": "cifar10", "data_root": str(tmp_path)})
    assert src.images.shape == (50, 3, 32, 32)
    np.testing.assert_allclose(src.images[3].numpy(), images[3] / 255.0, rtol=1e-6)
    table, meta = subset({"source": "cifar10", "data_root": str(tmp_path), "classes": ["automobile", "horse"],
                               "per_class": 5}, 0)
    assert meta["class_names"] == ["automobile", "horse"] and meta["d"] == 3072
    assert len(meta["mean"]) == 3 and meta["std"] == [1.0, 1.0, 1.0]  # per-channel centring only, by default
    table, meta = subset({"source": "cifar10", "data_root": str(tmp_path), "classes": ["automobile", "horse"],
                               "per_class": 5, "standardize": True}, 0)
    x = np.stack(table.column("x").to_numpy(zero_copy_only=False)).reshape(10, 3, -1)
    np.testing.assert_allclose(x.transpose(1, 0, 2).reshape(3, -1).std(1, ddof=1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("source, files", [("mnist", []), ("cifar10", [])])
def test_missing_files_give_one_line_error(tmp_path, source, files):
    with pytest.raises(InputError) as err:
        subset({"source": source, "data_root": str(tmp_path / "nowhere"), "classes": [1, 8]}, 0)
    msg = str(err.value)
    assert "\n" not in msg and "nowhere" in msg and "get it from" in msg


def test_resize_recipes():
    x = torch.rand(2, 1, 28, 28)
    padded = resize(x, 32, "pad")
    assert padded.shape == (2, 1, 32, 32) and torch.equal(padded[:, :, 2:30, 2:30], x)
    assert padded[:, :, :2].abs().sum() == 0
    up = resize(torch.rand(2, 1, 8, 8), 16, "bilinear")
    assert up.shape == (2, 1, 16, 16) and 0 <= float(up.min()) and float(up.max()) <= 1


@pytest.mark.skipif(not Path(FASHION_MNIST_DEBIAN).is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_files():
    table, meta = subset({"source": "fashion_mnist", "classes": ["Trouser", "Bag"], "per_class": 300}, 0)
    assert meta["shape"] == [1, 32, 32] and meta["class_counts"] == [300, 300]
    assert meta["class_names"] == ["Trouser", "Bag"]


def write_celeba(root: Path, n: int = 6, rgb: tuple[int, int, int] | None = None) -> np.ndarray:
    """CelebA's layout: img_align_celeba/*.jpg and list_attr_celeba.txt (count, header, rows)."""
    from PIL import Image

    (root / "img_align_celeba").mkdir(parents=True)
    male = np.array([1, -1] * (n // 2))
    lines = [str(n), "5_o_Clock_Shadow Male Smiling"]
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        level = 40 if male[i] > 0 else 200
        pixel = np.array(rgb if rgb is not None else (level,) * 3, dtype=np.uint8)
        Image.fromarray(np.tile(pixel, (24, 20, 1))).save(root / "img_align_celeba" / name)
        lines.append(f"{name}  -1 {male[i]:2d}  1")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return male


def test_celeba_reader_by_attribute(tmp_path):
    male = write_celeba(tmp_path)
    src = load_source({"source": "celeba", "data_root": str(tmp_path)})
    np.testing.assert_array_equal(src.labels, (male > 0).astype(int))
    table, meta = subset({"source": "celeba", "data_root": str(tmp_path), "classes": [0, 1], "per_class": 2,
                               "size": 8}, 0)
    assert meta["shape"] == [3, 8, 8] and meta["class_counts"] == [2, 2]
    assert meta["class_names"] == ["not Male", "Male"]
    x = np.stack(table.column("x").to_numpy(zero_copy_only=False)) + np.repeat(meta["mean"], 64)
    labels = np.asarray(table.column("label"))
    assert np.allclose(x[labels == 1], 40 / 255, atol=0.02) and np.allclose(x[labels == 0], 200 / 255, atol=0.02)
    coloured = tmp_path / "coloured"
    write_celeba(coloured, rgb=(200, 40, 10))
    grey, gmeta = subset({"source": "celeba", "data_root": str(coloured), "classes": [0, 1], "per_class": 2,
                          "size": 8, "grayscale": True}, 0)  # the follow-up's CelebA: 32 x 32 greyscale
    assert gmeta["shape"] == [1, 8, 8] and gmeta["d"] == 64
    g = np.stack(grey.column("x").to_numpy(zero_copy_only=False)) + gmeta["mean"][0]
    luma = (0.299 * 200 + 0.587 * 40 + 0.114 * 10) / 255  # ITU-R BT.601
    assert np.allclose(g, luma, atol=0.02)
    (tmp_path / "list_attr_celeba.txt").unlink()
    with pytest.raises(InputError, match="list_attr_celeba.txt: attribute file not found"):
        subset({"source": "celeba", "data_root": str(tmp_path), "classes": [0, 1]}, 0)


def test_resize_crop_keeps_the_centre():
    x = torch.zeros(1, 1, 30, 20)
    x[..., 3:27, :] = 1.0  # a band around the middle of a tall image; the crop keeps rows 5..25
    out = resize(x, 10, "resize_crop")
    assert out.shape == (1, 1, 10, 10) and float(out.min()) > 0.99


def test_lfw_subset_from_scikit_image():
    table, meta = subset({"source": "lfw_subset", "classes": ["face", "non-face"]}, 0)
    assert meta["shape"] == [1, 25, 25] and meta["class_counts"] == [100, 100]
    np.testing.assert_array_equal(np.asarray(table.column("label")), (np.arange(200) >= 100).astype(np.int8))


def test_imagenet_downsampled_pickles_with_class_map(tmp_path):
    rng = np.random.default_rng(2)
    side = 16
    data = rng.integers(0, 256, size=(40, 3 * side * side), dtype=np.uint8)
    labels = [1 + (i % 4) * 100 for i in range(40)]  # labels 1, 101, 201, 301
    for k, part in enumerate([slice(0, 25), slice(25, 40)]):
        with open(tmp_path / f"train_data_batch_{k + 1}", "wb") as fh:
            pickle.dump({"data": data[part], "labels": labels[part], "mean": data.mean(0)}, fh)
    (tmp_path / "map_clsloc.txt").write_text("n01 1 kit_fox\nn02 101 lesser_panda\nn03 201 seashore\n")
    src = load_source({"source": "imagenet_downsampled", "data_root": str(tmp_path)})
    assert src.images.shape == (40, 3, 16, 16)
    np.testing.assert_allclose(src.images[30].numpy().reshape(-1), data[30] / 255.0, rtol=1e-6)  # planes in order
    table, meta = subset({"source": "imagenet_downsampled", "data_root": str(tmp_path),
                               "classes": ["lesser_panda", "seashore"], "per_class": 5}, 0)
    assert meta["shape"] == [3, 16, 16] and meta["class_counts"] == [5, 5]

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(tmp_path / "train_data_batch_3", "wb") as fh:
        pickle.dump({"data": Evil(), "labels": []}, fh)
    with pytest.raises(InputError, match="train_data_batch_3: not a downsampled-ImageNet batch"):
        load_source({"source": "imagenet_downsampled", "data_root": str(tmp_path)})


@pytest.mark.parametrize("layout", ["lmdb", "folder"])
def test_lsun_databases_and_folders(tmp_path, layout):
    import io

    import lmdb
    from PIL import Image

    def jpeg(level: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(np.full((48, 60, 3), level, dtype=np.uint8)).save(buf, format="JPEG")
        return buf.getvalue()

    for cat, level in [("conference_room", 30), ("church_outdoor", 220)]:
        if layout == "lmdb":
            env = lmdb.open(str(tmp_path / f"{cat}_train_lmdb"), map_size=2**24)
            with env.begin(write=True) as txn:
                for i in range(4):
                    txn.put(f"{cat}{i:04d}".encode(), jpeg(level))
            env.close()
        else:
            (tmp_path / cat).mkdir()
            for i in range(4):
                (tmp_path / cat / f"{i}.jpg").write_bytes(jpeg(level))
    table, meta = subset({"source": "lsun", "data_root": str(tmp_path),
                               "classes": ["conference_room", "church_outdoor"], "per_class": 3, "size": 16}, 0)
    assert meta["shape"] == [3, 16, 16] and meta["class_counts"] == [3, 3]
    x = np.stack(table.column("x").to_numpy(zero_copy_only=False)) + np.repeat(meta["mean"], 256)
    labels = np.asarray(table.column("label"))
    assert np.allclose(x[labels == 0], 30 / 255, atol=0.03) and np.allclose(x[labels == 1], 220 / 255, atol=0.03)
    with pytest.raises(InputError, match="bedroom_train_lmdb: LMDB database"):
        subset({"source": "lsun", "data_root": str(tmp_path), "classes": ["bedroom", "church_outdoor"]}, 0)


def test_holdout_split_is_the_reference_and_holdout_0_gives_none():
    dataset = {"source": "sklearn_digits", "classes": [1, 8], "size": 16}
    table, meta, ref, ref_meta = make_subset({**dataset, "holdout": 0.25}, generator(0))
    assert meta["reference"] == ref_meta["reference"] == "held-out split"
    train_idx = set(np.asarray(table.column("source_index")))
    ref_idx = set(np.asarray(ref.column("source_index")))
    assert not train_idx & ref_idx and len(train_idx) + len(ref_idx) == 356  # disjoint, together every image
    assert abs(ref.num_rows - 89) <= 1 and sorted(set(np.asarray(ref.column("label")))) == [0, 1]
    x = np.stack(table.column("x").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(x.mean(), 0.0, atol=1e-5)  # centred by the training split's own mean
    _, meta0, ref0, ref_meta0 = make_subset({**dataset, "holdout": 0.0}, generator(0))
    assert meta0["n"] == 356 and ref0.num_rows == 0 and ref_meta0["reference"] == "none"


def test_imagenet_downsampled_npz_as_distributed(tmp_path):
    """The .npz files of the downsampled ImageNet (train_data_batch_1.npz ... with data, labels,
    mean) read as the pickles; sorted by batch number (10 after 9), object arrays refused."""
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, size=(30, 3 * 8 * 8), dtype=np.uint8)
    labels = np.array([1 + (i % 3) for i in range(30)])
    for k, part in [(9, slice(0, 10)), (10, slice(10, 20)), (2, slice(20, 30))]:
        np.savez(tmp_path / f"train_data_batch_{k}.npz", data=data[part], labels=labels[part], mean=data.mean(0))
    src = load_source({"source": "imagenet_downsampled", "data_root": str(tmp_path)})
    order = np.r_[20:30, 0:10, 10:20]  # batches 2, 9, 10
    np.testing.assert_allclose(src.images.numpy().reshape(30, -1), data[order] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(src.labels, labels[order] - 1)
    np.savez(tmp_path / "train_data_batch_11.npz", data=np.array([object()] * 2, dtype=object), labels=[1, 2])
    with pytest.raises(InputError, match=r"train_data_batch_11.npz: not a downsampled-ImageNet batch.*pickle"):
        load_source({"source": "imagenet_downsampled", "data_root": str(tmp_path)})
    (tmp_path / "train_data_batch_11.npz").write_bytes((tmp_path / "train_data_batch_2.npz").read_bytes()[:200])
    with pytest.raises(InputError, match="train_data_batch_11.npz: not a downsampled-ImageNet batch"):
        load_source({"source": "imagenet_downsampled", "data_root": str(tmp_path)})
    (tmp_path / "train_data_batch_11.npz").unlink()
    (tmp_path / "train_data_batch_2").write_bytes(pickle.dumps({"data": data[:2], "labels": [1, 2]}))
    with pytest.raises(InputError, match="train_data_batch_2 is there both pickled and as .npz"):
        load_source({"source": "imagenet_downsampled", "data_root": str(tmp_path)})


def png_declaring(width: int, height: int, rows: int = 0) -> bytes:
    """A greyscale PNG whose header declares ``width`` x ``height``; the first ``rows`` rows
    of zeros are compressed into it (all of them make a small file that decodes to a lot)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)
    body = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


HOSTILE_IMAGES = {
    "decompression bomb (100 000 x 100 000 declared)": (lambda: png_declaring(100_000, 100_000),
                                                         "declares 10,000,000,000"),
    "12 000 x 12 000 in a small file": (lambda: png_declaring(12_000, 12_000, rows=12_000),
                                        "declares 12000 x 12000"),
    "truncated PNG": (lambda: png_declaring(64, 64, rows=64)[:60], "cannot decode this image"),
    "not an image": (lambda: b"GIF89a" + bytes(40), "cannot decode this image"),
    "empty file": (lambda: b"", "empty or missing image"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_IMAGES))
def test_hostile_images_are_one_line_before_decoding(case, tmp_path):
    import resource

    make, words = HOSTILE_IMAGES[case]
    blob = make()
    write_celeba(tmp_path)
    (tmp_path / "img_align_celeba" / "000001.jpg").write_bytes(blob)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match="000001.jpg: ") as err:
        subset({"source": "celeba", "data_root": str(tmp_path), "classes": [0, 1], "per_class": 3, "size": 8}, 0)
    assert words in str(err.value) and "\n" not in str(err.value)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"reading it took {grown_mb:.0f} MB more"  # refused from the header


def test_damaged_text_and_databases_are_one_line(tmp_path):
    write_celeba(tmp_path)
    attr = tmp_path / "list_attr_celeba.txt"
    attr.write_bytes(attr.read_bytes().replace(b"Smiling", b"Souri\xe9"))  # a latin-1 byte
    with pytest.raises(InputError, match=r"list_attr_celeba.txt: not UTF-8 text \(byte \d+"):
        subset({"source": "celeba", "data_root": str(tmp_path), "classes": [0, 1]}, 0)
    attr.write_text("six\nMale\n000001.jpg 1\n")
    with pytest.raises(InputError, match="list_attr_celeba.txt: not CelebA's attribute format"):
        subset({"source": "celeba", "data_root": str(tmp_path), "classes": [0, 1]}, 0)
    db = tmp_path / "lsun" / "bedroom_train_lmdb"
    db.mkdir(parents=True)
    (db / "data.mdb").write_bytes(b"\x00garbage" * 512)
    with pytest.raises(InputError, match="bedroom_train_lmdb: not a readable LMDB database"):
        subset({"source": "lsun", "data_root": str(tmp_path / "lsun"), "classes": ["bedroom"]}, 0)
