"""Writes tests/fixtures/audit/goldens.json: fairlearn's group metrics for the
fairness audit's parity test (tests/audit.rs).

For each audited package it scores the package's committed audit data set
(``models/<name>/<version>/audit.csv``) with ONNX Runtime 1.31.1, the same
library the Rust side loads, with one thread and sequential execution, and
keeps every score: the Rust test first checks that its own scores are bit
for bit these, so that both sides decide on identical numbers.  A row is
selected when its float32 score, widened to float64, is at or above the
manifest's ``decision_threshold``, as in ``src/audit``.

Metrics come from fairlearn: ``MetricFrame`` with ``selection_rate``,
``true_positive_rate`` and ``count`` by group, the mean score and observed
rate by group, and ``demographic_parity_ratio``,
``demographic_parity_difference`` and ``equal_opportunity_difference``.

Run it with the pinned environment of tests/requirements-fairness.txt:

    .venv-fairness/bin/python tests/fairness_goldens.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

import fairlearn
import numpy as np
import onnxruntime as ort
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    selection_rate,
    true_positive_rate,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "audit" / "goldens.json"
PACKAGES = ["caravan-lgbm/1.0.0", "caravan-logreg/1.0.0"]
GROUP_COLUMNS = ["age_band", "income_band"]
LABEL = "Purchase"


def mean(_y_true, values) -> float:
    return float(np.mean(values))


def score(model: Path, manifest: dict, X: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    out = manifest["model"]["output"]
    (probs,) = sess.run([out["tensor"]], {manifest["model"]["input"]["tensor"]: X})
    assert probs.dtype == np.float32
    return probs[:, out["index"]]


def audit(package: str) -> dict:
    pkg = REPO / "models" / package
    manifest = tomllib.loads((pkg / "manifest.toml").read_text(encoding="utf-8"))
    features = [f["name"] for f in sorted(manifest["features"], key=lambda f: f["position"])]
    data_path = pkg / "audit.csv"
    df = pd.read_csv(data_path, dtype={c: str for c in GROUP_COLUMNS})
    scores = score(pkg / "model.onnx", manifest, df[features].to_numpy(dtype=np.float32))
    threshold = manifest["model"]["output"]["decision_threshold"]
    wide = scores.astype(np.float64)
    y_pred = (wide >= threshold).astype(int)
    y_true = df[LABEL].to_numpy(dtype=int)
    result = {
        "sha256": hashlib.sha256((pkg / "model.onnx").read_bytes()).hexdigest(),
        "data_sha256": hashlib.sha256(data_path.read_bytes()).hexdigest(),
        "decision_threshold": threshold,
        "scores": [float(s) for s in scores],
        "overall": {
            "selection_rate": float(selection_rate(y_true, y_pred)),
            "true_positive_rate": float(true_positive_rate(y_true, y_pred)),
            "mean_score": float(np.mean(wide)),
        },
        "attributes": {},
    }
    for column in GROUP_COLUMNS:
        groups = df[column]
        by_group = MetricFrame(
            metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                     "count": count, "observed_rate": lambda yt, yp: float(np.mean(yt))},
            y_true=y_true, y_pred=y_pred, sensitive_features=groups,
        ).by_group
        mean_score = MetricFrame(metrics=mean, y_true=y_true, y_pred=wide,
                                 sensitive_features=groups).by_group
        result["attributes"][column] = {
            "groups": {
                str(g): {
                    "rows": int(by_group.loc[g, "count"]),
                    "selection_rate": float(by_group.loc[g, "selection_rate"]),
                    "true_positive_rate": float(by_group.loc[g, "true_positive_rate"]),
                    "observed_rate": float(by_group.loc[g, "observed_rate"]),
                    "mean_score": float(mean_score.loc[g]),
                }
                for g in by_group.index
            },
            "demographic_parity_ratio": float(
                demographic_parity_ratio(y_true, y_pred, sensitive_features=groups)),
            "demographic_parity_difference": float(
                demographic_parity_difference(y_true, y_pred, sensitive_features=groups)),
            "equal_opportunity_difference": float(
                equal_opportunity_difference(y_true, y_pred, sensitive_features=groups)),
        }
    return result


def main() -> int:
    if ort.__version__ != "1.31.1":
        raise SystemExit(f"onnxruntime==1.31.1 required, found {ort.__version__}")
    goldens = {
        "generator": "tests/fairness_goldens.py",
        "fairlearn": fairlearn.__version__,
        "onnxruntime": ort.__version__,
        "packages": {p: audit(p) for p in PACKAGES},
    }
    OUT.write_text(json.dumps(goldens, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
