"""The summary table and the paper's Table 1, assembled from the columns each measurement
declares once (its module's ``SUMMARY``: column name, key of its file's metadata, dtype).

One row per (experiment, score model): per experiment the spectrum, the entropy and the
theory; per (experiment, score) cloning, collapse and, for experiments with U-turns, the
U-turns (null otherwise). Columns come in the order of :data:`SOURCES`, each source's in
its own declared order, after ``experiment`` and ``score``.
"""

from __future__ import annotations

import pandas as pd

from . import cloning, collapse, entropy, references, spectrum, theory, uturn

#: (source: the name of its file kind, its declared columns), in column order
SOURCES = (("spectrum", spectrum.SUMMARY), ("cloning", cloning.SUMMARY), ("entropy", entropy.SUMMARY),
           ("collapse", collapse.SUMMARY), ("theory", theory.SUMMARY), ("theory", references.SUMMARY),
           ("uturn", uturn.SUMMARY))


def columns() -> list[str]:
    """Every column of the summary, in order."""
    return ["experiment", "score"] + [name for _, declared in SOURCES for name, _, _ in declared]


def summary_table(rows: list[tuple[str, str, dict[str, dict]]]) -> pd.DataFrame:
    """The summary from, per (experiment, score), the metadata of each source's file
    (``{source: metadata}``; a missing source gives nulls)."""
    records, dtypes = [], {}
    for exp, score, metas in rows:
        record = {"experiment": exp, "score": score}
        for source, declared in SOURCES:
            meta = metas.get(source) or {}
            for name, key, dtype in declared:
                record[name] = meta.get(key)
                if dtype:
                    dtypes[name] = dtype
        records.append(record)
    return pd.DataFrame(records, columns=columns()).astype(dtypes)


def table1(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 for the experiments of the summary: n, d, Lambda (all channels and
    channel 0), t_S = 1/2 log Lambda, the paper's Lambda where it has one, the crossings of the
    reference curves phi_G and phi_H (with s.e.), and the t_S measured by cloning with each
    score model and its ratio to 1/2 log Lambda."""
    rows = []
    for exp, part in summary.groupby("experiment", sort=False):
        first = part.iloc[0]
        lam_paper = first["Lambda_paper"]
        row = {"experiment": exp, "source": first["source"], "n": int(first["n"]), "d": int(first["d"]),
               "Lambda": first["Lambda"], "Lambda_channel0": first["Lambda_channel0"], "t_S": first["t_S_theory"],
               "Lambda_paper": None if pd.isna(lam_paper) else float(lam_paper)}
        for ref in ("gaussian", "heldout"):  # the references computed from the data (references.py)
            for col in (f"t_S_{ref}", f"t_S_{ref}_se"):
                row[col] = None if pd.isna(first[col]) else float(first[col])
        for _, r in part.iterrows():
            measured = None if pd.isna(r["t_S_measured"]) else float(r["t_S_measured"])
            row[f"t_S_measured_{r['score']}"] = measured
            row[f"ratio_{r['score']}"] = None if measured is None else measured / first["t_S_theory"]
        rows.append(row)
    return pd.DataFrame(rows)


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 as a Markdown document."""
    return ("# Table 1: speciation time from the spectrum, and measured by cloning\n\n"
            + table.to_markdown(index=False, floatfmt=".4g") + "\n")
