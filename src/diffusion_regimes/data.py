"""The subset table: what the ``subset`` stage writes and every later stage reads.

Convention: a subset is n samples of one data model (:mod:`diffusion_regimes.datamodels`)
as float32 vectors of length d (images: pixels in [0, 1], resized as the source's
recipe says, centred by the per-channel mean of the subset, kept in the metadata,
flattened to ``d = C*H*W``), with their class (0/1 within the subset for images;
the model's classes for solvable sources) and their position in the source.

``data.parquet``: ``label`` int8, ``source_index`` int64, ``x`` fixed-size list of
float32 [d]; the metadata holds ``shape``, ``mean``, ``classes``, ``source``, ``n``,
``d``, ``class_counts`` and the data model's parameters.

``reference.parquet`` (same columns): the null of memorisation, a set no model sees:
fresh draws of the population for solvable sources (as many as the training set), the
held-out split of the selected images for image sources (``dataset.holdout``, centred
with the training mean). Training, the empirical score, the spectrum and the entropy
use ``data.parquet`` only.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .datamodels import Subset, data_model
from .errors import InputError
from .io import read_metadata
from .memory import check_fits

#: float32 copies of the drawn data alive at once while a subset is made (draws, centred rows,
#: the table's buffers), for the memory estimate
DRAW_COPIES = 3


def _table(sub: Subset) -> tuple[pa.Table, dict]:
    x = sub.x.contiguous().numpy().astype(np.float32)
    n, d = x.shape
    meta = dict(sub.meta)
    table = pa.table({
        "label": pa.array(np.asarray(sub.labels).astype(np.int8)),
        "source_index": pa.array(np.asarray(sub.source_index, dtype=np.int64)),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)})
    meta.update({"n": n, "d": d, "class_counts": np.bincount(sub.labels, minlength=len(meta["classes"])).tolist()})
    return table, meta


def _check_classes(dataset: dict, meta: dict, ref_meta: dict, reference: str) -> None:
    """Every class has training points, and a held-out split asked for holds some of each."""
    counts, names = meta["class_counts"], meta["classes"]
    if 0 in counts:
        raise InputError(f"dataset: class {names[counts.index(0)]} has no point in the training split (points per "
                         f"class: {counts}): raise dataset.n or per_class, lower holdout, or check dataset.classes")
    holdout = dataset.get("holdout") or 0
    if holdout > 0 and (reference == "none" or 0 in ref_meta["class_counts"]):
        raise InputError(f"dataset.holdout {holdout} holds out {ref_meta['class_counts']} points per class: every "
                         "class needs held-out points for the memorisation null; raise per_class or holdout, or set "
                         "holdout: 0 (no null)")


def make_subset(dataset: dict, generator: torch.Generator,
                reference_generator: torch.Generator | None = None) -> tuple[pa.Table, dict, pa.Table, dict]:
    """The subset table (label, source_index, x) and its metadata from a config ``dataset``
    block, drawn by its data model with ``generator``, and the reference table and metadata:
    the model's own held-out split, or (solvable sources) ``dataset['n_reference']`` (default
    n) fresh draws of the population, drawn with ``reference_generator``."""
    model = data_model(dataset["source"])
    if "n" in dataset:  # drawn data: n x d known before anything is drawn
        rows = int(dataset["n"]) + int(dataset.get("n_reference") or dataset["n"])
        d = math.prod(model.planned_shape(dataset))
        check_fits(f"dataset n = {dataset['n']} (+ its reference) x d = {d}", DRAW_COPIES * 4 * rows * d,
                   "reduce dataset.n, dataset.n_reference or dataset.d")
    sub = model.sample(dataset, generator)
    ref, kind = sub.reference, "held-out split" if sub.reference is not None and len(sub.reference.x) else "none"
    if ref is None:
        if reference_generator is None:
            raise ValueError("a fresh reference set needs reference_generator")
        size = dataset.get("n_reference") or dataset["n"]
        ref, kind = model.sample({**dataset, "n": size}, reference_generator), "fresh population draws"
    table, meta = _table(sub)
    ref_table, ref_meta = _table(ref)
    _check_classes(dataset, meta, ref_meta, kind)
    ref_meta["reference"] = meta["reference"] = kind
    meta["n_reference"] = ref_meta["n"]
    return table, meta, ref_table, ref_meta


def load_subset(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Read ``data.parquet`` (or ``reference.parquet``): x (n, d) float32, labels (n,) int64,
    metadata.

    Row groups (bounded in size by :func:`diffusion_regimes.io.write_table`) are read
    one at a time into one preallocated array, so the peak memory is the data plus
    one row group, not several copies of the data."""
    meta = read_metadata(path, "subset")
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
            bad = np.flatnonzero(~np.isfinite(x[i:i + rows]).all(1))
            if len(bad):
                raise InputError(f"{path}: row {i + int(bad[0])} of x holds NaN or inf; the subset is corrupt: "
                                 "delete it and re-run subset (or check the source's files)")
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


def source_index(path: str) -> np.ndarray:
    """The ``source_index`` column (n,) int64 of a subset file: each row's position in its source."""
    read_metadata(path, "subset")
    return pq.read_table(path, columns=["source_index"]).column("source_index").to_numpy()


def training_overlap(recorded: dict, reference: str) -> int | None:
    """How many images a model records it was trained on (``recorded``: ``source`` and
    ``source_index``) are in the reference set file ``reference``; None when the record is of
    another source."""
    meta = read_metadata(reference, "subset")
    if recorded.get("source") != meta.get("source"):
        return None
    return int(np.isin(source_index(reference), np.asarray(recorded["source_index"], dtype=np.int64)).sum())
