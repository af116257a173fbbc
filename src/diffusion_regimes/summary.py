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


def _headline_fields(get) -> dict[str, str]:
    """One summary row's headline numbers as text, one quantity each (``-``: missing);
    ``get`` reads a column of the row."""
    theory, half = get("t_S_theory"), get("t_S_half_log_Lambda")
    return {
        "t_S theory": _pm(theory, None),
        # a data model whose t_S is not ½ log Λ (the covariance mixture) keeps ½ log Λ beside it
        "½ log Λ": "-" if half is None or pd.isna(half) or half == theory else f"{half:.3f}",
        "t_S measured": _pm(get("t_S_measured"), get("t_S_measured_se")),
        "t_S φ_G": _pm(get("t_S_gaussian"), get("t_S_gaussian_se")),
        "t_S φ_H": _pm(get("t_S_heldout"), get("t_S_heldout_se")),
        "t_U": _pm(get("t_U_measured"), get("t_U_measured_se")),
        "memorised": _pm(get("memorised_fraction"), get("memorised_fraction_se")),
        "memorised, null": _pm(get("memorised_fraction_null"), None),
        "t_C entropy [band]": ("-" if pd.isna(get("t_C_entropy")) else
                               f"{get('t_C_entropy'):.3f} [{get('t_C_entropy_lo'):.3f}, {get('t_C_entropy_hi'):.3f}]"),
    }


def headline_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The summary's headline numbers as text, one row per (experiment, score): the theory's
    t_S (½ log Λ, or the data model's closed form with ½ log Λ beside it), t_S
    measured against the data's reference crossings (φ_G, φ_H), t_U, the memorised fraction
    against its null, and the entropy's t_C with its band; a missing value is ``-``."""
    rows = []
    for r in df.itertuples():
        f = _headline_fields(r._asdict().get)
        theory = f["t_S theory"] + ("" if f["½ log Λ"] == "-" else f" (½ log Λ {f['½ log Λ']})")
        memo = "-" if f["memorised"] == "-" else f"{f['memorised']} (null {f['memorised, null']})"
        rows.append({"experiment": r.experiment, "score": r.score, "t_S theory": theory,
                     "t_S measured": f["t_S measured"], "t_S φ_G / φ_H": f"{f['t_S φ_G']} / {f['t_S φ_H']}",
                     "t_U": f["t_U"], "memorised (null)": memo, "t_C entropy [band]": f["t_C entropy [band]"]})
    return pd.DataFrame(rows)


def console(path) -> str:
    """The summary file's headline numbers (:func:`headline_rows`) as a short text table."""
    from .io import read_table

    df, _ = read_table(path, stage="summary")
    return (f"{path}: the headline numbers (every column, with its definition: summary.tsv, "
            f"docs/measurements.md; figures: results/figures/, make report)\n"
            f"{headline_rows(df).to_string(index=False)}")


def landing_rst(summary: pd.DataFrame, figures: dict[str, str]) -> str:
    """The report's landing section (reStructuredText): the headline numbers as one narrow
    table per experiment (quantities down, score models across: the report's description
    column is about 500 px wide, and a wide table would run under the rule graph beside it)
    and the given figures (``figures``: caption -> PNG path) inline, as data URIs, so that the
    report opens on the results."""
    import base64
    from pathlib import Path

    lines = ["Results", "-------", "", "The headline numbers (every column: the Summary category, summary.tsv; "
             "``-``: not measured or not crossed)."]
    for exp, rows in summary.groupby("experiment", sort=False):
        fields = [_headline_fields(r._asdict().get) for r in rows.itertuples()]
        # every quantity, "-" where not measured; ½ log Λ only where it is not the theory's t_S
        keys = [k for k in fields[0] if k != "½ log Λ" or any(f[k] != "-" for f in fields)]
        lines += ["", f".. list-table:: {exp}", "   :header-rows: 1", "   :stub-columns: 1", "",
                  "   * - score"] + [f"     - {s}" for s in rows["score"]]
        for k in keys:  # a lone "-" would be an empty bullet list in reStructuredText: escape it
            lines += [f"   * - {k}"] + [f"     - {f[k]}" if f[k] != "-" else "     - \\-" for f in fields]
    for caption, png in figures.items():
        uri = "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode()
        # the URI over lines of 1000 characters (docutils joins them; it refuses lines over 10 000)
        lines += ["", f"**{caption}**", "", ".. image::"] + ["   " + uri[i:i + 1000] for i in range(0, len(uri), 1000)]
        lines += ["   :width: 100%"]
    return "\n".join(lines) + "\n"
