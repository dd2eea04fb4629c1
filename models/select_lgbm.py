"""Choose a LightGBM configuration for Caravan by cross-validation.

Scores every combination of ``num_leaves`` x ``learning_rate`` x number of
trees by the mean ROC AUC of 5-fold stratified cross-validation on the
training split of ``train_caravan.py`` (the hold-out is never read), with
``caravan-lgbm`` 1.1.0's regularisation (``min_child_samples``,
``subsample``, ``colsample_bytree``, ``reg_lambda``). It prints the best
configurations, and those within one standard error of the best, smallest
first.  ``caravan-lgbm`` 1.2.0 is the best configuration of this grid.

Run from the repository root with the pinned training environment
(models/README.md); it takes about 30 s:

    .venv-models/bin/python models/select_lgbm.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True

import train_caravan as tc  # noqa: E402

LEAVES = (3, 4, 7, 15, 31)
LEARNING_RATES = (0.02, 0.05, 0.1)
TREES = (10, 25, 50, 75, 100, 150, 200, 300)


def main() -> int:
    _, _, X, y = tc.load_data()
    train_idx, _ = tc.split(y)
    X, y = X[train_idx], y[train_idx]
    folds = list(StratifiedKFold(n_splits=tc.CV_FOLDS, shuffle=True,
                                 random_state=tc.SEED).split(X, y))
    results = []
    for leaves in LEAVES:
        for rate in LEARNING_RATES:
            aucs: dict[int, list[float]] = {n: [] for n in TREES}
            for fit, test in folds:
                est = tc.lgbm(max(TREES), leaves, rate).fit(X[fit], y[fit])
                # The first n trees of one fit are the n-tree model.
                for n in TREES:
                    scores = est.predict_proba(X[test], num_iteration=n)[:, 1]
                    aucs[n].append(roc_auc_score(y[test], scores))
            for n, values in aucs.items():
                se = float(np.std(values, ddof=1) / np.sqrt(len(values)))
                results.append((float(np.mean(values)), se, leaves, rate, n))

    def show(r):
        mean, se, leaves, rate, n = r
        return (f"cv_roc_auc {mean:.4f} (se {se:.4f})  num_leaves {leaves:2d}  "
                f"learning_rate {rate:.2f}  trees {n:3d}  leaves in all {leaves * n}")

    results.sort(reverse=True)
    best = results[0]
    print("best 10:")
    for r in results[:10]:
        print("  " + show(r))
    near = sorted((r for r in results if r[0] >= best[0] - best[1]), key=lambda r: r[2] * r[4])
    print("within one standard error of the best, fewest leaves first (first 10):")
    for r in near[:10]:
        print("  " + show(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
