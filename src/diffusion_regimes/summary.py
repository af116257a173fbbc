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


def _pm(value, se, digits: int = 3) -> str:
    """``value ± se``; a missing value (no crossing, no such measurement) is ``-``."""
    if value is None or pd.isna(value):
        return "-"
    return f"{value:.{digits}f}" + ("" if se is None or pd.isna(se) else f" ± {se:.{digits}f}")


def headline_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The summary's headline numbers as text, one row per (experiment, score): the theory's
    t_S (½ log Λ, or the data model's closed form with ½ log Λ beside it), t_S
    measured against the data's reference crossings (φ_G, φ_H), t_U, the memorised fraction
    against its null, and the entropy's t_C with its band; a missing value is ``-``."""
    rows = []
    for r in df.itertuples():
        get = r._asdict().get
        band = ("-" if pd.isna(get("t_C_entropy")) else
                f"{get('t_C_entropy'):.3f} [{get('t_C_entropy_lo'):.3f}, {get('t_C_entropy_hi'):.3f}]")
        memo = ("-" if pd.isna(get("memorised_fraction")) else
                f"{_pm(get('memorised_fraction'), get('memorised_fraction_se'))} (null "
                f"{_pm(get('memorised_fraction_null'), None)})")
        refs = " / ".join(_pm(get(k), get(f"{k}_se")) for k in ("t_S_gaussian", "t_S_heldout"))
        theory = _pm(get("t_S_theory"), None)
        if not pd.isna(get("t_S_half_log_Lambda")) and get("t_S_half_log_Lambda") != get("t_S_theory"):
            theory += f" (½ log Λ {get('t_S_half_log_Lambda'):.3f})"  # a model whose t_S is not ½ log Λ
        rows.append({"experiment": r.experiment, "score": r.score, "t_S theory": theory,
                     "t_S measured": _pm(get("t_S_measured"), get("t_S_measured_se")),
                     "t_S φ_G / φ_H": refs,
                     "t_U": _pm(get("t_U_measured"), get("t_U_measured_se")),
                     "memorised (null)": memo, "t_C entropy [band]": band})
    return pd.DataFrame(rows)


def console(path) -> str:
    """The summary file's headline numbers (:func:`headline_rows`) as a short text table."""
    from .io import read_table

    df, _ = read_table(path, stage="summary")
    return (f"{path}: the headline numbers (every column, with its definition: summary.tsv, "
            f"docs/measurements.md; figures: results/figures/, make report)\n"
            f"{headline_rows(df).to_string(index=False)}")


def landing_rst(summary: pd.DataFrame, figures: dict[str, str]) -> str:
    """The report's landing section (reStructuredText): the headline numbers as a table and
    the given figures (``figures``: caption -> PNG path) inline, as data URIs, so that the
    report opens on the results."""
    import base64
    from pathlib import Path

    table = headline_rows(summary)
    lines = ["Results", "-------", "", ".. list-table:: The headline numbers (all columns: the Summary category, "
             "summary.tsv)", "   :header-rows: 1", ""]
    for row in [list(table.columns)] + table.astype(str).values.tolist():
        lines += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
    for caption, png in figures.items():
        uri = "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode()
        # the URI over lines of 1000 characters (docutils joins them; it refuses lines over 10 000)
        lines += ["", f"**{caption}**", "", ".. image::"] + ["   " + uri[i:i + 1000] for i in range(0, len(uri), 1000)]
        lines += ["   :width: 100%"]
    return "\n".join(lines) + "\n"
