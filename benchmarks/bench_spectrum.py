"""Spectrum stage at the paper's largest size: wall time and peak memory.

Writes a synthetic data.parquet (default n = 40 000, d = 12 288 = 64x64x3: a
rank-16 signal plus unit noise) in row batches, then runs the spectrum stage in
a fresh process and prints its wall time and peak resident memory (target:
< 4 GiB; the data alone are n*d*4 bytes = 1.83 GiB).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from diffusion_regimes.io import METADATA_KEY, make_metadata


def write_data(path: Path, n: int, d: int, k: int = 16, batch: int = 2000) -> None:
    g = torch.Generator().manual_seed(0)
    w, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
    scale = torch.linspace(12.0, 3.0, k)
    meta = make_metadata("subset", {}, 0, {"n": n, "d": d, "shape": [3, 64, 64] if d == 12288 else [d],
                                           "source": "synthetic", "mean": [0.0, 0.0, 0.0]})
    schema = pa.schema([("label", pa.int8()), ("source_index", pa.int64()), ("x", pa.list_(pa.float32(), d))],
                       metadata={METADATA_KEY: json.dumps(meta).encode()})
    with pq.ParquetWriter(path, schema) as writer:
        for i in range(0, n, batch):
            b = min(batch, n - i)
            x = (torch.randn(b, k, generator=g) * scale) @ w.T + torch.randn(b, d, generator=g)
            writer.write_table(pa.table({
                "label": pa.array(np.zeros(b, dtype=np.int8)), "source_index": pa.array(np.arange(i, i + b)),
                "x": pa.FixedSizeListArray.from_arrays(pa.array(x.numpy().reshape(-1)), d)}, schema=schema))


def run_stage(data: Path, out: Path, method: str) -> None:
    from diffusion_regimes import stages

    t0 = time.perf_counter()
    stages.spectrum({"data": str(data)}, {"spectrum": str(out)}, {"top": 64, "method": method, "lambda_from": "all"})
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"wall_s": wall, "peak_rss_gib": rss}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=40000)
    p.add_argument("--d", type=int, default=12288)
    p.add_argument("--method", default="auto")
    p.add_argument("--stage", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.stage:
        run_stage(Path(a.stage[0]), Path(a.stage[1]), a.method)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data.parquet", Path(tmp) / "spectrum.parquet"
        t0 = time.perf_counter()
        write_data(data, a.n, a.d)
        print(f"wrote n={a.n} d={a.d} ({a.n * a.d * 4 / 2**30:.2f} GiB of float32) in {time.perf_counter() - t0:.0f} s")
        res = subprocess.run([sys.executable, __file__, "--method", a.method, "--stage", str(data), str(out)],
                             capture_output=True, text=True, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        from diffusion_regimes.io import read_metadata

        meta = read_metadata(out)
        print(f"spectrum stage: {r['wall_s']:.1f} s, peak memory {r['peak_rss_gib']:.2f} GiB (target < 4 GiB)")
        print(f"Lambda = {meta['Lambda']:.2f} (population 1 + 12^2 = 145), t_S = {meta['t_S']:.3f}")


if __name__ == "__main__":
    main()
