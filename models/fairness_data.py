"""Writes the fairness-audit data set of every bundled Caravan package.

``models/<name>/<version>/audit.csv`` holds the hold-out split of
``models/train_caravan.py`` (the same rows, in the same order; no row the
models were trained on): the 78 model inputs in model order, the label
``Purchase`` (1 = bought a caravan policy) and two audit-only group columns:

* ``age_band``: the household's average-age class ``MGEMLEEF`` (CoIL 2000
  code table L1: 1 = 20-30 years, ..., 6 = 70-80 years), banded into
  ``20-40``, ``40-50`` and ``50-80`` so that every band holds enough buyers
  to measure a true-positive rate.  ``MGEMLEEF`` is excluded from the model
  inputs: the models never see age.
* ``income_band``: the zip code's average-income class ``MINKGEM`` (0-9),
  banded into ``0-3``, ``4`` and ``5-9``.  ``MINKGEM`` IS a model input; the
  manifests declare this column as banding it (``income_band:MINKGEM``) and
  the audit says so in its report.

It also writes each manifest's ``[fairness]`` section (replacing the one
there): the data set, the label, the two group columns and the declared
thresholds the validation gate checks, with a note on why they are what
they are.  Run it after ``train_caravan.py``, which writes manifests
without that section.

Nothing is trained and no committed model changes.  Run it with the pinned
environment of ``models/requirements.txt`` (see that file), e.g.

    .venv-models/bin/python models/fairness_data.py

Re-running reproduces every file byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.dont_write_bytecode = True
sys.path.insert(0, str(HERE))
import train_caravan as tc  # noqa: E402  (load_data, split, write_csv, int_row)

AUDIT_FILE = "audit.csv"
AGE_BANDS = {1: "20-40", 2: "20-40", 3: "40-50", 4: "50-80", 5: "50-80", 6: "50-80"}
INCOME_BANDS = {0: "0-3", 1: "0-3", 2: "0-3", 3: "0-3", 4: "4",
                5: "5-9", 6: "5-9", 7: "5-9", 8: "5-9", 9: "5-9"}


# Declared thresholds, per group column.  Every Caravan model FAILS the
# four-fifths rule on both attributes (hold-out disparate-impact ratios: age
# 0.65-0.79, income 0.22-0.32); the thresholds below are set just under the
# current models' values so that the gate catches a regression, and the note
# says so in every report and model card.
GROUPS = [
    {"column": "age_band", "bands": None,
     "min_disparate_impact": 0.6, "max_equal_opportunity_difference": 0.45},
    {"column": "income_band", "bands": "MINKGEM",
     "min_disparate_impact": 0.2, "max_equal_opportunity_difference": 0.55},
]
NOTE = (
    "Provisional thresholds, below the four-fifths rule, which every Caravan model fails: "
    "by age band (ratio 0.65-0.79 on the hold-out) and by income band (0.22-0.32). They sit "
    "just under the current models' values so that the gate catches a regression; they are "
    "not an endorsement, and the owner must decide whether to accept, re-threshold or retrain. "
    "Age is not a model input; its disparity comes through correlated zip-code features. "
    "Income is (MINKGEM), and buyers concentrate in the higher bands. Each band holds 10-40 "
    "buyers, so true-positive rates are coarse (one buyer moves a rate by 0.025-0.1)."
)


def fairness_section() -> str:
    lines = ["[fairness]", f'data = "{AUDIT_FILE}"', f'label_column = "{tc.TARGET}"',
             f"note = {tc.toml_str(NOTE)}"]
    for g in GROUPS:
        lines += ["", "[[fairness.groups]]", f'column = "{g["column"]}"']
        if g["bands"]:
            lines.append(f'bands = "{g["bands"]}"')
        lines += [f'min_disparate_impact = {g["min_disparate_impact"]}',
                  f'max_equal_opportunity_difference = {g["max_equal_opportunity_difference"]}']
    return "\n".join(lines) + "\n"


def write_fairness_section(manifest: Path) -> None:
    text = manifest.read_text(encoding="utf-8")
    head = text.split("\n[fairness]\n")[0].rstrip("\n") + "\n"
    manifest.write_text(head + "\n" + fairness_section(), encoding="utf-8")


def main() -> int:
    df, features, X, y = tc.load_data()
    _, hold_idx = tc.split(y)
    age = df["MGEMLEEF"].to_numpy()[hold_idx]
    income = df["MINKGEM"].to_numpy()[hold_idx]
    header = features + [tc.TARGET, "age_band", "income_band"]
    rows = [
        tc.int_row(X[i]) + [str(int(y[i])), AGE_BANDS[int(a)], INCOME_BANDS[int(m)]]
        for i, a, m in zip(hold_idx, age, income)
    ]
    for spec in tc.MODELS:
        pkg = HERE / spec["name"] / spec["version"]
        assert (pkg / "manifest.toml").is_file(), pkg
        tc.write_csv(pkg / AUDIT_FILE, header, rows)
        write_fairness_section(pkg / "manifest.toml")
        print(f"{pkg / AUDIT_FILE}: {len(rows)} rows, {int(y[hold_idx].sum())} buyers")
    labels = np.array(y[hold_idx])
    for column, position in (("age_band", -2), ("income_band", -1)):
        bands = np.array([r[position] for r in rows])
        for band in sorted(set(bands)):
            mask = bands == band
            print(f"  {column}={band}: {mask.sum()} rows, {int(labels[mask].sum())} buyers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
