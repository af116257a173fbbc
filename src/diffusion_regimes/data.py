"""The subset table: what the ``subset`` stage writes and every later stage reads.

Convention: a subset is n samples of one data model (:mod:`diffusion_regimes.datamodels`)
as float32 vectors of length d (images: pixels in [0, 1], resized as the source's
recipe says, centred by the per-channel mean of the subset, kept in the metadata,
flattened to ``d = C*H*W``), with their class (0/1 within the subset for images;
the model's classes for solvable sources) and their position in the source.

``data.parquet``: ``label`` int8, ``source_index`` int64, ``x`` fixed-size list of
float32 [d]; the metadata holds ``shape``, ``mean``, ``classes``, ``source``, ``n``,
``d``, ``class_counts`` and the data model's parameters.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .datamodels import data_model
from .errors import InputError
from .io import read_metadata


def make_subset(dataset: dict, generator: torch.Generator) -> tuple[pa.Table, dict]:
    """The subset table (label, source_index, x) and its metadata from a config
    ``dataset`` block, drawn by its data model with ``generator``."""
    sub = data_model(dataset["source"]).sample(dataset, generator)
    x = sub.x.contiguous().numpy().astype(np.float32)
    n, d = x.shape
    meta = dict(sub.meta)
    table = pa.table({
        "label": pa.array(sub.labels.astype(np.int8)),
        "source_index": pa.array(np.asarray(sub.source_index, dtype=np.int64)),
        "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)})
    meta.update({"n": n, "d": d, "class_counts": np.bincount(sub.labels, minlength=len(meta["classes"])).tolist()})
    return table, meta


def load_subset(path: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Read ``data.parquet``: x (n, d) float32, labels (n,) int64, metadata.

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
