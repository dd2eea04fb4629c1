#!/usr/bin/env bash
# Candor's attribution kernels next to their peers, on the same models and
# rows, one thread each, in one run: the bundled Caravan LightGBM (300 trees x
# 31 leaves, golden rows) and the 500-tree depth-6 stress model
# (tests/fixtures/stress/lgbm-500x6):
#   - shap TreeExplainer path-dependent, LightGBM pred_contrib, shap's C++
#     engine, and shap interventional with 100 background rows (Python);
#   - Candor's path-dependent and interventional kernels (cargo bench
#     --bench attributions, criterion), path-dependent both one row per call
#     and all rows in one call, as the peers are given them.
# It prints one table with rows/s and Candor's ratio to each peer.
# Usage: bash benches/attribution_peers.sh   (needs the pinned training venv;
# it is created from models/requirements*.txt when missing)
set -euo pipefail
cd "$(dirname "$0")/.."

make --no-print-directory ort
if [ ! -x .venv-models/bin/python ]; then
    python3 -m venv .venv-models
    .venv-models/bin/pip install --quiet -r models/requirements.txt -r models/requirements-goldens.txt
    .venv-models/bin/pip install --quiet --no-deps ISLP==0.6.0
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
OMP_NUM_THREADS=1 .venv-models/bin/python models/attribution_goldens.py --peer-speeds --out "$out"
cargo bench --bench attributions -- --noplot >/dev/null

python3 - "$out/peer_speeds.json" <<'PY'
import json, sys
from pathlib import Path

doc = json.loads(Path(sys.argv[1]).read_text())
peers = doc["results"]
def candor(name, group):
    base = Path("target/criterion") / group / name / "new"
    rows = json.loads((base / "benchmark.json").read_text())["throughput"]["Elements"]
    return rows * 1e9 / json.loads((base / "estimates.json").read_text())["median"]["point_estimate"]

def table(title, model, peer_results, peers):
    one = candor("TreeSHAP path-dependent", f"{model}, one row, one thread")
    block = candor("TreeSHAP path-dependent", f"{model}, all rows per call, one thread")
    interventional = candor("TreeSHAP interventional, 100 background rows",
                            f"{model}, one row, one thread")
    print(f"| kernel ({title}, one thread) | rows/s | ratio, one row per call | ratio, all rows per call |")
    print("|---|---|---|---|")
    print(f"| Candor TreeSHAP path-dependent, one row per call | {one:,.0f} | | |")
    print(f"| Candor TreeSHAP path-dependent, all rows per call | {block:,.0f} | | |")
    for key, label in peers:
        r = peer_results[key]["rows_per_second"]
        print(f"| {label} | {r:,.0f} | {one / r:.2f}x | {block / r:.2f}x |")
    r = peer_results["shap_interventional_100_background"]["rows_per_second"]
    print(f"| Candor TreeSHAP interventional, 100 background | {interventional:,.0f} | | |")
    print(f"| shap interventional, 100 background | {r:,.0f} | {interventional / r:.2f}x | |")

table("caravan-lgbm", "caravan-lgbm", peers,
      [("shap_tree_path_dependent", "shap path-dependent"),
       ("lightgbm_pred_contrib", "LightGBM pred_contrib"),
       ("shap_cpp_tree_path_dependent", "shap C++ engine")])
ort = candor("ORT score", "caravan-lgbm, ORT, one thread")
print(f"| ORT score (for scale) | {ort:,.0f} | | |")
print()
table("500 trees x depth 6, 50 features", "lgbm-500x6 stress", doc["stress"]["results_stress"],
      [("shap_tree_path_dependent", "shap path-dependent"),
       ("lightgbm_pred_contrib", "LightGBM pred_contrib")])
PY
