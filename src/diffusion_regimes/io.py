"""The one way to write and read files: atomic, with metadata. Imports torch only to save
or load a checkpoint (the workflow's DAG evaluation reads this module).

Tables are Parquet (pyarrow) with a JSON metadata entry under the key
``diffusion_regimes``; model state is a ``.pt`` checkpoint holding only tensors
and plain Python values, loaded with ``torch.load(..., weights_only=True)``.
Every file is written to a temporary name in the destination folder and
renamed when complete, so a killed job never leaves a half-written output; the
temporaries a killed writer leaves behind are removed by the next write to the
same folder.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .errors import InputError
from .paths import RESULTS

__all__ = ["InputError", "atomic_path", "write_table", "read_metadata", "read_table", "concat_tables",
           "save_checkpoint", "load_checkpoint", "make_metadata", "check_kept_inputs"]

METADATA_KEY = b"diffusion_regimes"
#: target size of a Parquet row group: readers hold one at a time
ROW_GROUP_BYTES = 64 * 2**20


#: this host in the names of temporaries (dots would make the names ambiguous)
_HOST = (socket.gethostname() or "host").replace(".", "-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Remove the temporaries that killed writers left in ``folder``: any for the target
    ``name`` (its one writer is starting again), and those of dead processes of this host.
    Temporaries are named ``.{target}.{host}.{pid}.{random}.tmp``; a live writer's, or one
    from another host for another target, is kept. Returns the removed paths."""
    removed = []
    for tmp in folder.glob(".*.tmp"):
        parts = tmp.name[1:-len(".tmp")].rsplit(".", 3)
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        target, host, pid = parts[0], parts[1], int(parts[2])
        if target == name or (host == _HOST and not _alive(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success. Stale
    temporaries in the folder are removed first (:func:`remove_stale_temporaries`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _jsonable(value: Any) -> Any:
    """Convert numpy / torch scalars and arrays to JSON-friendly values (NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):  # a tensor (torch not imported)
        return _jsonable(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: keys of the metadata that are not stage results
RESERVED_KEYS = ("stage", "version", "config", "seed", "threads")


def make_metadata(stage: str, config: dict | None = None, seed: int | None = None,
                  results: dict | None = None) -> dict:
    """Standard metadata: ``stage``, package ``version``, ``config`` subset, ``seed``, the
    CPU ``threads`` used (results are bit-identical only for the same count), and the
    stage's scalar results as top-level keys (``Lambda``, ``t_S``, ``nfe``, ...)."""
    results = results or {}
    clash = set(results) & set(RESERVED_KEYS)
    if clash:
        raise ValueError(f"result names {sorted(clash)} are reserved metadata keys")
    import torch

    return _jsonable({"stage": stage, "version": __version__, "config": config or {}, "seed": seed,
                      "threads": torch.get_num_threads(), **results})


def write_table(df: pd.DataFrame | pa.Table, path: str | os.PathLike, metadata: dict) -> None:
    """Write a Parquet table atomically with ``metadata`` under ``diffusion_regimes``."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    existing = table.schema.metadata or {}
    table = table.replace_schema_metadata(
        {**existing, METADATA_KEY: json.dumps(_jsonable(metadata), sort_keys=True).encode()})
    rows = max(1, int(ROW_GROUP_BYTES // max(table.nbytes / max(table.num_rows, 1), 1)))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=rows)


def one_line(err: BaseException, most: int = 160) -> str:
    """The first line of an exception's text (its type when empty), at most ``most`` characters."""
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:most]


def out_of_memory(err: BaseException) -> bool:
    """Whether an exception is an allocation failure (MemoryError, torch's CPU allocator or
    CUDA out of memory), which a refusal should name as such."""
    text = str(err).lower()
    return isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def read_metadata(path: str | os.PathLike, stage: str | tuple[str, ...] | None = None,
                  fix: str | None = None) -> dict:
    """The ``diffusion_regimes`` metadata of a Parquet file written by :func:`write_table`;
    with ``stage``, the file must have been written by that stage (or one of them). ``fix``:
    what a refusal tells the user to do (by default, to delete the file and re-run its stage)."""
    fix = fix or (f"delete it and re-run the {stage} stage" if isinstance(stage, str)
                  else "delete it and re-run the stage that makes it")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise InputError(f"{path}: not a readable Parquet file ({one_line(err)}); {fix}") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise InputError(f"{path}: no '{METADATA_KEY.decode()}' metadata; it was not written "
                         f"by diffusion-regimes, {fix}")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: its '{METADATA_KEY.decode()}' metadata is not valid JSON ({one_line(err)}); "
                         f"{fix}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: its '{METADATA_KEY.decode()}' metadata is not a JSON object; {fix}")
    expected = (stage,) if isinstance(stage, str) else stage
    if expected and meta.get("stage") not in expected:
        raise InputError(f"{path}: written by the {meta.get('stage')} stage, not by {' or '.join(expected)}; "
                         f"{fix}")
    return meta


def read_table(path: str | os.PathLike, columns: list[str] | None = None,
               stage: str | tuple[str, ...] | None = None) -> tuple[pd.DataFrame, dict]:
    """Read a table and its metadata (checked as :func:`read_metadata` does)."""
    meta = read_metadata(path, stage)
    try:
        df = pq.read_table(path, columns=columns).to_pandas()
    except (OSError, pa.ArrowException, KeyError) as err:
        raise InputError(f"{path}: cannot read columns {columns} ({one_line(err)}); delete it and re-run "
                         "the stage that makes it") from None
    return df, meta


def concat_tables(paths: list[str], key: str, stage: str | None = None, finite: tuple[str, ...] = ()) -> pd.DataFrame:
    """The rows of several tables (the shards of a stage) in one frame, ordered by ``key``;
    a NaN or inf in a column of ``finite`` is refused with one line naming its file and row."""
    parts = [read_table(p, stage=stage)[0] for p in paths]
    for path, part in zip(paths, parts):
        for col in finite:
            values = part[col].to_numpy(dtype=np.float64, na_value=np.nan) if col in part else np.empty(0)
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                where = f"row {bad[0]} ({key} = {part[key].iloc[bad[0]]})" if key in part else f"row {bad[0]}"
                raise InputError(f"{path}: {col} is {values[bad[0]]} in {where}; a non-finite result is not a "
                                 "measurement: delete the file and re-run its stage")
    table = pd.concat(parts, ignore_index=True)
    if key not in table:
        raise InputError(f"{paths[0]}: no column {key!r}; delete the shards and re-run their stage")
    return table.sort_values(key, kind="stable").reset_index(drop=True)


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Save a checkpoint (tensors and plain values only) atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint safely (``weights_only=True``): a file from elsewhere never runs code.

    Raises :class:`InputError` (one line) when the file is missing, corrupt, not
    a plain checkpoint, or lacks one of the ``required`` keys.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found; run the stage that makes it")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: we refuse them
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or unsafe files; its text is not shown
        if "Unsupported global" in str(err):
            why = ("it holds Python objects other than tensors and plain values, which could run code when "
                   "loaded: unsafe to load, and not a checkpoint of diffusion-regimes")
        else:
            why = ("not a checkpoint of diffusion-regimes: unreadable as tensors and plain values (corrupt, "
                   "truncated, another format, or a plain pickle, which is unsafe to load)")
        raise InputError(f"{path}: refused, {why}; delete it and re-run the stage that makes it") from None
    if not isinstance(obj, dict) or any(k not in obj for k in required):
        raise InputError(f"{path}: checkpoint lacks keys {list(required)}; it was not written by "
                         "this version of diffusion-regimes, delete it and re-run its stage")
    return obj


def check_checkpoint_archive(path: str | os.PathLike, fix: str = "delete it and re-run the stage that makes it"
                             ) -> None:
    """Check, without torch and without unpickling anything, that ``path`` is a complete
    checkpoint archive (the zip that ``torch.save`` writes, every member's CRC intact)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise InputError(f"{path}: refused, not a checkpoint of diffusion-regimes: not the zip archive torch.save "
                         f"writes ({one_line(err)}: corrupt, truncated, another format, or a plain pickle, which "
                         f"is unsafe to load); {fix}") from None
    if damaged is not None:
        raise InputError(f"{path}: refused, a damaged checkpoint (member {damaged} fails its CRC); {fix}")


def check_kept_inputs(jobs: Iterable) -> None:
    """Before any job runs, check the results files that the jobs about to run will read as
    they are (inputs under ``results/`` that none of these jobs remakes): Parquet tables by
    their metadata (:func:`read_metadata`), checkpoints as archives
    (:func:`check_checkpoint_archive`). A damaged one is refused here with one line, because
    once a job starts, Snakemake has removed that job's earlier outputs, valid or not. The
    fix it prints (``--forcerun FILE``) remakes the file and everything that depends on it;
    deleting the file would not, as Snakemake does not remake a missing intermediate file
    whose dependents are present.

    ``jobs``: objects with ``input`` and ``output`` (file names), e.g. Snakemake's jobs."""
    jobs = list(jobs)
    remade = {str(f) for job in jobs for f in job.output}
    kept = sorted({str(f) for job in jobs for f in job.input} - remade)
    for name in kept:
        path = Path(name)
        if not path.is_file() or not path.as_posix().startswith(f"{RESULTS}/"):
            continue
        fix = (f"nothing was run or removed: run again adding --forcerun {name} to remake it and what depends "
               "on it")
        if path.suffix == ".parquet":
            read_metadata(path, fix=fix)
        elif path.suffix == ".pt":
            check_checkpoint_archive(path, fix)
