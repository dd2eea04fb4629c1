"""Golden TreeSHAP values from the Python ``shap`` library for Candor's Rust tests.

Writes ``tests/fixtures/attributions/<fixture>/`` for six tree ensembles, each
exported to ONNX the way Candor serves models (input ``input`` float32
[N, n_features], no ZipMap, opsets ai.onnx 17 / ai.onnx.ml 3, IR 8):

=================  ============================================================
``caravan-lgbm``   the bundled ``models/caravan-lgbm/1.0.0/model.onnx`` (not
                   copied).  The native booster is retrained with the exact
                   code path of ``train_caravan.py``; the script asserts that
                   its ONNX export is byte-identical to the bundled file.
``lgbm-nan``       LightGBM binary, synthetic data with NaNs in training and
                   in the explained rows, 50 trees, 15 leaves.
``lgbm-multiclass`` LightGBM, 3 classes (sklearn wine), 30 trees per class.
``xgb-binary``     XGBoost binary (sklearn breast cancer), 50 trees, depth 4,
                   converted with ``onnxmltools.convert_xgboost``.
``rf-average``     sklearn RandomForestClassifier (breast cancer), 20 trees,
                   depth 6, via skl2onnx (leaves hold P(class 1) / n_trees).
``gbr-regressor``  sklearn GradientBoostingRegressor (diabetes), 50 trees,
                   depth 3, via skl2onnx.
=================  ============================================================

Each fixture folder holds (see ``meta.json`` / ``notes`` for specifics):

* ``model.onnx``            (not for caravan-lgbm; ``meta.json`` names the model)
* ``X.csv``                 50 rows to explain (header f0..f{n-1}, or the
                            Caravan feature names); NaN is an empty cell
* ``background.csv``        100 background rows, same header
* ``covers.csv``            ``tree_id,node_id,cover``: the NATIVE model's node
                            covers keyed by the ONNX ``nodes_treeids`` /
                            ``nodes_nodeids`` of every node, leaves included
                            (mapping and writer in tree_covers.py, shared
                            with train_caravan.py)
* ``onnx_outputs.csv``      onnxruntime outputs for X (``probabilities`` or
                            ``variable``), header out0..
* ``native_margins.csv``    the native model's raw margin per output (margin0..)
* ``shap_path.csv``         shap TreeExplainer, tree_path_dependent, margin space
* ``shap_interventional.csv`` shap TreeExplainer, interventional (100
                            background rows), model_output="raw"
* ``meta.json``             expected values, output count, margin space, notes

SHAP files have one block of n_features columns per output; with several
outputs the header is ``f0_c0..f{n-1}_c0, f0_c1, ...``.  Every number is
written as ``repr`` of a Python float, so it parses back exactly; X values are
float32 values, exact in both f32 and f64.

What the script asserts, per fixture:

* the ONNX tree of every ``nodes_treeids`` value is walked in parallel with the
  native tree (true branch = native left/"yes" child): split feature, mode,
  float32(native threshold) == ONNX threshold, NaN direction and leaf weight
  must agree, and every ONNX node maps to exactly one native node;
* covers: cover(parent) == cover(true child) + cover(false child);
* every explained row and background row goes the same way at EVERY split
  node (TreeSHAP tests x at all nodes, not only on its path) natively, in the
  ONNX tree (float32 thresholds, onnxruntime's NaN rule) and in shap's
  interventional engine, which stores thresholds as float32 (tree_shap.h,
  ``struct Node { float thres, value; }``) and so misroutes a value lying
  between a double threshold and its float32 rounding.  Other candidates are
  skipped and counted (``rows_dropped``, ``background_rows_dropped`` and
  their ``*_reasons`` in meta.json);
* onnxruntime's outputs equal the post-transformed native margin (and, with
  post_transform forced to NONE, the margin itself) within 1e-5 (relative for
  margins above 1);
* expected + sum(shap) == native margin within 1e-6 for both SHAP files;
* an independent Python TreeSHAP (tree_path_dependent) run on the ONNX trees
  with ``covers.csv`` reproduces ``shap_path.csv`` (to 1e-9), and an exact
  interventional SHAP on the ONNX trees reproduces ``shap_interventional.csv``
  (to 1e-6: shap's interventional values are only good to ~1e-7).

Run from the repository root (Python 3.11), after the setup in
models/README.md (requirements.txt plus ISLP==0.6.0 --no-deps)::

    .venv-models/bin/pip install -r models/requirements-goldens.txt
    .venv-models/bin/python models/attribution_goldens.py

It takes under a minute, single-threaded.  Re-runs reproduce the fixtures byte
for byte.  ``--peer-speeds`` (instead of writing the fixtures) times shap and
LightGBM on caravan-lgbm and on the stress model (key ``stress``) and writes
``tests/fixtures/attributions/peer_speeds.json``; ``--out DIR`` writes
elsewhere.

``--stress`` writes only ``tests/fixtures/stress/lgbm-500x6/`` (or under
``--out DIR``): a seeded LightGBM binary classifier (make_classification, 5000
rows, 50 features; 500 trees, max_depth 6, num_leaves 63) exported like the
other LightGBM fixtures, with ``model.onnx``, ``X.csv`` (300 rows),
``background.csv`` (100 rows), ``covers.csv`` and ``meta.json``; no SHAP
goldens.  The default run does not build or write it.
"""

from __future__ import annotations

import os
import sys

# Single-threaded everything, before numpy / LightGBM / XGBoost load OpenMP.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
sys.dont_write_bytecode = True  # leave no __pycache__ in models/

import argparse  # noqa: E402
import csv  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.special  # noqa: E402
import shap  # noqa: E402
import xgboost as xgb  # noqa: E402
from onnxmltools import convert_lightgbm, convert_xgboost  # noqa: E402
from onnxmltools.convert.common.data_types import FloatTensorType as OnnxmltoolsFloatTensorType  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType as Skl2onnxFloatTensorType  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine, make_classification  # noqa: E402
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import train_caravan as tc  # noqa: E402  (same seeds, data loading and ONNX helpers)
from tree_covers import (  # noqa: E402  (ONNX trees, native LightGBM trees, covers)
    LGBM_COVERS_MAPPING, OnnxEnsemble, covers_from_mapping, fmt, lgbm_native_trees,
    map_onnx_to_native, tree_node, write_covers)

SEED = tc.SEED
OPSETS = tc.OPSETS
IR_VERSION = tc.IR_VERSION
INPUT_NAME = tc.INPUT_NAME
ORT_VERSION = tc.ORT_VERSION
SHAP_VERSION = "0.51.0"

N_EXPLAIN = 50
N_BACKGROUND = 100
CARAVAN_MODEL = "models/caravan-lgbm/1.0.0/model.onnx"
OUT_DEFAULT = REPO / "tests" / "fixtures" / "attributions"

ADDITIVITY_TOL = 1e-6     # expected + sum(phi) vs native margin (x max(1, |margin|))
ONNX_TOL = 1e-5           # onnxruntime (float32) vs native (x max(1, |value|))
REFERENCE_TOL = 1e-9      # Python TreeSHAP on ONNX+covers.csv vs shap_path


# --------------------------------------------------------------------------
# Formatting and writing
# --------------------------------------------------------------------------

def write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow([fmt(v) for v in r])


def block_header(features: list[str], n_outputs: int) -> list[str]:
    if n_outputs == 1:
        return list(features)
    return [f"{f}_c{k}" for k in range(n_outputs) for f in features]


def flatten_blocks(phi: np.ndarray) -> np.ndarray:
    """(N, F, K) -> (N, K*F), one block of F columns per output."""
    n, f, k = phi.shape
    return phi.transpose(0, 2, 1).reshape(n, k * f)


# --------------------------------------------------------------------------
# ONNX: normalisation, onnxruntime (tree parsing: tree_covers.OnnxEnsemble)
# --------------------------------------------------------------------------

def finalize_onnx(model: onnx.ModelProto, graph_name: str, doc: str, features: list[str],
                  X_check: np.ndarray) -> onnx.ModelProto:
    """Pin opsets / IR as train_caravan.finalize_onnx does; outputs must not change."""
    before = onnx.ModelProto()
    before.CopyFrom(model)
    for node in model.graph.node:
        assert node.op_type != "ZipMap", "ZipMap must not be in the exported graph"
        assert node.domain in OPSETS, node.domain
    del model.opset_import[:]
    for domain, ver in OPSETS.items():
        model.opset_import.append(onnx.helper.make_opsetid(domain, ver))
    model.ir_version = IR_VERSION
    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == 2 and dims[1].dim_value == len(features)
    dims[0].Clear()
    for out in model.graph.output:
        odims = out.type.tensor_type.shape.dim
        if len(odims):
            odims[0].Clear()
    model.graph.name = graph_name
    model.doc_string = doc
    del model.metadata_props[:]
    model.metadata_props.append(onnx.StringStringEntryProto(
        key="candor.input.features", value=",".join(features)))
    onnx.checker.check_model(model, full_check=True)
    old = tc.ort_session(before.SerializeToString()).run(None, {INPUT_NAME: X_check})
    new = tc.ort_session(model.SerializeToString()).run(None, {INPUT_NAME: X_check})
    for a, b in zip(old, new):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), "opset pin changed outputs"
    return model


def with_post_transform_none(model: onnx.ModelProto) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = tree_node(m)
    for a in node.attribute:
        if a.name == "post_transform":
            a.s = b"NONE"
    return m.SerializeToString()


def probe_ort_binary_all_positive(model: onnx.ModelProto, X: np.ndarray) -> dict:
    """Make every leaf weight of a binary LOGISTIC model positive and see what ORT does."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = tree_node(m)
    for a in node.attribute:
        if a.name == "class_weights":
            w = [abs(v) * 0.01 for v in a.floats]
            del a.floats[:]
            a.floats.extend(w)
    ens = OnnxEnsemble(m)
    assert ens.post_transform == "LOGISTIC" and ens.ort_quirk_binary_all_positive()
    label, probs = tc.ort_session(m.SerializeToString()).run(["label", "probabilities"],
                                                             {INPUT_NAME: X})
    s = np.array([sum(ens.trees[t][ens.leaf(t, x)]["w"][0] for t in ens.trees) for x in X])
    sig = scipy.special.expit(s)
    assert np.allclose(probs[:, 1], sig, atol=1e-6), "ORT skipped the sigmoid"
    assert np.allclose(probs[:, 0], 1.0 - sig, atol=1e-6)
    assert np.array_equal(label, (s > 0.5).astype(np.int64)), "label rule changed"
    return {
        "what": "all lgbm-nan leaf weights replaced by |w| * 0.01, post_transform LOGISTIC",
        "probabilities": "[1 - sigmoid(s), sigmoid(s)] (sigmoid NOT skipped)",
        "label": "1 iff raw s > 0.5 (not s > 0 / p > 0.5)",
        "rows_with_p_above_half_but_label_0": int(((sig > 0.5) & (label == 0)).sum()),
        "rows": len(X),
    }


# --------------------------------------------------------------------------
# Native XGBoost and sklearn trees, in the shape of tree_covers.lgbm_native_trees:
# {key: {leaf, feature, threshold, left, right, nan_left, cover, value}}; "left"
# is where x <= thr (sklearn) or x < thr (XGBoost) goes, i.e. the ONNX true
# branch.  The ONNX parsing, the ONNX -> native mapping and the covers are in
# tree_covers.py, shared with train_caravan.py.
# --------------------------------------------------------------------------

def xgb_native_trees(booster: xgb.Booster) -> list[dict]:
    model = json.loads(booster.save_raw("json"))
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    # Cross-check the covers against get_dump (the text the converter reads).
    dumps = [json.loads(s) for s in booster.get_dump(with_stats=True, dump_format="json")]
    out = []
    for t, dump in zip(trees, dumps):
        left, right = t["left_children"], t["right_children"]
        nodes = {}
        for i in range(len(left)):
            cover = float(np.float32(t["sum_hessian"][i]))
            if left[i] == -1:
                nodes[i] = {"leaf": True, "value": float(np.float32(t["split_conditions"][i])),
                            "cover": cover}
            else:
                nodes[i] = {"leaf": False, "feature": int(t["split_indices"][i]),
                            "threshold": float(np.float32(t["split_conditions"][i])),
                            "mode": "BRANCH_LT", "left": left[i], "right": right[i],
                            "nan_left": bool(t["default_left"][i]), "cover": cover,
                            # shap: x <= nextafter(thr, -inf) in float32 (its "<=" for "<")
                            "shap_threshold": float(np.nextafter(np.float32(t["split_conditions"][i]),
                                                                 np.float32(-np.inf))),
                            "shap_nan_left": bool(t["default_left"][i])}
        stack = [dump]
        while stack:
            d = stack.pop()
            assert np.isclose(d["cover"], nodes[d["nodeid"]]["cover"], rtol=1e-6), d["nodeid"]
            if "children" in d:
                assert d["yes"] == left[d["nodeid"]] and d["no"] == right[d["nodeid"]]
                stack.extend(d["children"])
        out.append({"root": 0, "nodes": nodes})
    return out


def sklearn_native_trees(estimators, value_fn) -> list[dict]:
    out = []
    for est in estimators:
        tr = est.tree_
        nodes = {}
        for i in range(tr.node_count):
            cover = float(tr.weighted_n_node_samples[i])
            if tr.children_left[i] == -1:
                nodes[i] = {"leaf": True, "value": value_fn(tr, i), "cover": cover}
            else:
                nodes[i] = {"leaf": False, "feature": int(tr.feature[i]),
                            "threshold": float(tr.threshold[i]), "mode": "BRANCH_LEQ",
                            "round_down": True,
                            "shap_threshold": float(tr.threshold[i]), "shap_nan_left": False,
                            "left": int(tr.children_left[i]), "right": int(tr.children_right[i]),
                            "nan_left": None, "cover": cover}
        out.append({"root": 0, "nodes": nodes})
    return out


# --------------------------------------------------------------------------
# Independent TreeSHAP (tree_path_dependent, Lundberg et al. 2018, Alg. 2)
# on the ONNX trees with the covers from covers.csv.
# --------------------------------------------------------------------------

def _extend(m, pz, po, pi):
    ln = len(m)
    m = [list(e) for e in m] + [[pi, pz, po, 1.0 if ln == 0 else 0.0]]
    for i in range(ln - 1, -1, -1):
        m[i + 1][3] += po * m[i][3] * (i + 1) / (ln + 1)
        m[i][3] = pz * m[i][3] * (ln - i) / (ln + 1)
    return m


def _unwind(m, i):
    ln = len(m) - 1
    n = m[ln][3]
    m = [list(e) for e in m]
    z, o = m[i][1], m[i][2]
    for j in range(ln - 1, -1, -1):
        if o != 0:
            tmp = m[j][3]
            m[j][3] = n * (ln + 1) / ((j + 1) * o)
            n = tmp - m[j][3] * z * (ln - j) / (ln + 1)
        else:
            m[j][3] = m[j][3] * (ln + 1) / (z * (ln - j))
    for j in range(i, ln):
        m[j][0], m[j][1], m[j][2] = m[j + 1][0], m[j + 1][1], m[j + 1][2]
    return m[:ln]


def _unwound_sum(m, i):
    ln = len(m) - 1
    z, o = m[i][1], m[i][2]
    n = m[ln][3]
    total = 0.0
    for j in range(ln - 1, -1, -1):
        if o != 0:
            tmp = n * (ln + 1) / ((j + 1) * o)
            total += tmp
            n = m[j][3] - tmp * z * (ln - j) / (ln + 1)
        else:
            total += m[j][3] * (ln + 1) / (z * (ln - j))
    return total


def reference_treeshap(ens: OnnxEnsemble, covers: dict, leaf_values: dict, x: np.ndarray,
                       n_features: int):
    """phi (n_features,) and expected value for one output; leaf_values[(t, node)]."""
    phi = np.zeros(n_features)
    expected = 0.0
    for t, tree in ens.trees.items():
        def recurse(j, m, pz, po, pi):
            m = _extend(m, pz, po, pi)
            nd = tree[j]
            if nd["leaf"]:
                v = leaf_values.get((t, j), 0.0)
                for i in range(1, len(m)):
                    phi[m[i][0]] += _unwound_sum(m, i) * (m[i][2] - m[i][1]) * v
                return
            hot, cold = ((nd["true"], nd["false"]) if ens.goes_true(nd, float(x[nd["feature"]]))
                         else (nd["false"], nd["true"]))
            iz = io = 1.0
            d = nd["feature"]
            k = next((k for k in range(1, len(m)) if m[k][0] == d), None)
            if k is not None:
                iz, io = m[k][1], m[k][2]
                m = _unwind(m, k)
            rj = covers[(t, j)]
            recurse(hot, m, iz * covers[(t, hot)] / rj, io, d)
            recurse(cold, m, iz * covers[(t, cold)] / rj, 0.0, d)

        root = ens.roots[t]
        recurse(root, [], 1.0, 1.0, -1)
        croot = covers[(t, root)]
        expected += sum(covers[(t, n)] / croot * leaf_values.get((t, n), 0.0)
                        for n, nd in tree.items() if nd["leaf"])
    return phi, expected


def cover_weighted_expected(ens: OnnxEnsemble, covers: dict, leaf_values: dict) -> float:
    """TreeSHAP's expected value: per tree, the cover-weighted mean leaf value."""
    total = 0.0
    for t, tree in ens.trees.items():
        croot = covers[(t, ens.roots[t])]
        total += sum(covers[(t, n)] / croot * leaf_values.get((t, n), 0.0)
                     for n, nd in tree.items() if nd["leaf"])
    return total


def reference_interventional(ens: OnnxEnsemble, leaf_values: dict, x: np.ndarray,
                             background: np.ndarray, n_features: int) -> np.ndarray:
    """Exact interventional SHAP on the ONNX trees, averaged over background rows.

    For one reference row z, the Shapley values of v(S) = f(x_S, z_rest) for a
    tree: follow x and z together; where they part on a feature not yet fixed,
    branch with that feature taken from x or from z.  A leaf reached with nx
    features from x and nz from z gives each x-feature +v (nx-1)! nz! / (nx+nz)!
    and each z-feature -v nx! (nz-1)! / (nx+nz)!."""
    from math import factorial
    phi = np.zeros(n_features)
    for z in background:
        for t, tree in ens.trees.items():
            def recurse(j, sx, sz):
                nd = tree[j]
                if nd["leaf"]:
                    v = leaf_values.get((t, j), 0.0)
                    nx, nz = len(sx), len(sz)
                    if nx:
                        w = factorial(nx - 1) * factorial(nz) / factorial(nx + nz) * v
                        for i in sx:
                            phi[i] += w
                    if nz:
                        w = factorial(nx) * factorial(nz - 1) / factorial(nx + nz) * v
                        for i in sz:
                            phi[i] -= w
                    return
                f = nd["feature"]
                cx = nd["true"] if ens.goes_true(nd, float(x[f])) else nd["false"]
                cz = nd["true"] if ens.goes_true(nd, float(z[f])) else nd["false"]
                if cx == cz or f in sx:
                    recurse(cx, sx, sz)
                elif f in sz:
                    recurse(cz, sx, sz)
                else:
                    recurse(cx, sx | {f}, sz)
                    recurse(cz, sx, sz | {f})
            recurse(ens.roots[t], frozenset(), frozenset())
    return phi / len(background)


# --------------------------------------------------------------------------
# Fixture assembly
# --------------------------------------------------------------------------

def to_3d(phi, n_rows: int, n_features: int) -> np.ndarray:
    phi = np.asarray(phi, dtype=np.float64)
    if phi.ndim == 2:
        phi = phi[:, :, None]
    assert phi.shape[:2] == (n_rows, n_features), phi.shape
    return phi


def shap_values(model, X: np.ndarray, background: np.ndarray | None, outputs: list[int]):
    """(phi (N, F, K), expected [K], explainer) for the chosen shap outputs."""
    if background is None:
        explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    else:
        explainer = shap.TreeExplainer(model, data=background,
                                       feature_perturbation="interventional", model_output="raw")
    phi = to_3d(explainer.shap_values(X), len(X), X.shape[1])
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    return phi[:, :, outputs], [float(expected[k]) for k in outputs], explainer


def shap_internal_path(model, X: np.ndarray, outputs: list[int]):
    """shap's own C++ TreeSHAP (not the LightGBM/XGBoost shortcut), double precision.

    TreeExplainer hands tree_path_dependent requests for LightGBM / XGBoost to
    the library's own pred_contrib; setting model_type to "internal" makes it
    run shap's C++ algorithm on the trees (and covers) it parsed instead."""
    explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
    explainer.model.model_type = "internal"
    phi = to_3d(explainer.shap_values(X), len(X), X.shape[1])
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
    return phi[:, :, outputs], [float(expected[k]) for k in outputs], explainer


def check_additive(name: str, phi: np.ndarray, expected: list[float], margins: np.ndarray) -> float:
    total = np.asarray(expected)[None, :] + phi.sum(axis=1)
    err = np.abs(total - margins) / np.maximum(1.0, np.abs(margins))
    worst = float(err.max())
    assert worst <= ADDITIVITY_TOL, f"{name}: additivity off by {worst}"
    return worst


def post_transform(ens: OnnxEnsemble, margins: np.ndarray) -> np.ndarray:
    """What onnxruntime writes for these margins (a binary model writes 2 columns)."""
    pt = ens.post_transform
    if ens.op_type == "TreeEnsembleClassifier" and margins.shape[1] == 1:
        s = margins[:, 0]
        if pt == "LOGISTIC":
            return np.stack([scipy.special.expit(-s), scipy.special.expit(s)], axis=1)
        assert pt == "NONE", pt
        if ens.ort_quirk_binary_all_positive():
            return np.stack([1.0 - s, s], axis=1)
        return np.stack([-s, s], axis=1)
    if pt == "SOFTMAX":
        return scipy.special.softmax(margins, axis=1)
    assert pt == "NONE", pt
    return margins


def split_routes(ens: OnnxEnsemble, native: list[dict], mapping: dict):
    """Per split node (all trees): how the native model, the ONNX node and shap's
    interventional engine send a value.  Returns a function X -> (native, onnx,
    shap) boolean arrays [N, n_splits] (True = native left / ONNX true branch)."""
    feat, nthr, nlt, nnan, othr, omode, otrack, sthr, snan = ([] for _ in range(9))
    for (t, o), n in mapping.items():
        on, nn = ens.trees[t][o], native[t]["nodes"][n]
        if on["leaf"]:
            continue
        feat.append(nn["feature"])
        nthr.append(nn["threshold"])
        nlt.append(nn["mode"] == "BRANCH_LT")
        nnan.append(bool(nn["nan_left"]))
        othr.append(on["threshold"])
        omode.append(on["mode"])
        otrack.append(bool(on["tracks_true"]))
        sthr.append(nn["shap_threshold"])
        snan.append(nn["shap_nan_left"])
    feat = np.array(feat)
    nthr, othr = np.array(nthr), np.array(othr)
    with np.errstate(over="ignore"):
        # shap's interventional engine (tree_shap.h, tree_shap_indep) keeps
        # thresholds in a float32 Node field: nearest float32 of shap's threshold.
        sthr32 = np.array(sthr).astype(np.float32).astype(np.float64)
    nlt, nnan, otrack, snan = map(np.array, (nlt, nnan, otrack, snan))
    assert set(omode) <= {"BRANCH_LEQ", "BRANCH_LT"}, set(omode)
    olt = np.array([m == "BRANCH_LT" for m in omode])

    def routes(X: np.ndarray):
        v = X.astype(np.float64)[:, feat]
        nan = np.isnan(v)
        with np.errstate(invalid="ignore"):
            nat = np.where(nan, nnan, np.where(nlt, v < nthr, v <= nthr))
            onx = np.where(nan, otrack, np.where(olt, v < othr, v <= othr))
            shp = np.where(nan, snan, v <= sthr32)
        return nat, onx, shp

    return routes


def select_rows(routes, candidates: np.ndarray, n_keep: int):
    """First n_keep candidates that every split node routes the same way natively,
    in ONNX and in shap's interventional engine.  Path-dependent TreeSHAP tests
    x at every split node of a tree, and interventional SHAP sends mixtures of
    x and background rows down any branch, so a row must agree at ALL nodes,
    not only on its own path."""
    nat, onx, shp = routes(candidates)
    onnx_ok = (nat == onx).all(axis=1)
    shap_ok = (nat == shp).all(axis=1)
    ok = np.flatnonzero(onnx_ok & shap_ok)
    assert len(ok) >= n_keep, f"only {len(ok)} consistent rows"
    keep = ok[:n_keep]
    seen = int(keep[-1]) + 1                 # candidates looked at
    dropped = sorted(set(range(seen)) - set(keep.tolist()))
    reasons = {"onnx_threshold_or_nan_rule": int((~onnx_ok[:seen]).sum()),
               "shap_float32_threshold": int((onnx_ok & ~shap_ok)[:seen].sum())}
    return keep, dropped, reasons


def build_fixture(out: Path, spec: dict) -> dict:
    name = spec["name"]
    features: list[str] = spec["features"]
    F = len(features)
    model_proto: onnx.ModelProto = spec["onnx"]
    ens = OnnxEnsemble(model_proto)
    outputs = spec["shap_outputs"]           # indices into shap's outputs
    K = len(outputs)
    native = spec["native_trees"]
    mapping, map_stats = map_onnx_to_native(ens, native, spec["leaf_class"], spec.get("leaf_scale", 1.0))
    covers, cover_err = covers_from_mapping(ens, native, mapping, spec["cover_rel_tol"])

    # Rows: every split node must route them the same way natively, in ONNX and
    # in shap's interventional engine.
    routes = split_routes(ens, native, mapping)
    cand = spec["candidates"]
    keep, dropped, x_reasons = select_rows(routes, cand, N_EXPLAIN)
    X = np.ascontiguousarray(cand[keep])
    dropped_rows = [spec["candidate_ids"][i] for i in dropped]
    bcand = spec["background_candidates"]
    bkeep, bdropped, b_reasons = select_rows(routes, bcand, N_BACKGROUND)
    B = np.ascontiguousarray(bcand[bkeep])
    bdropped_rows = [spec["background_candidate_ids"][i] for i in bdropped]
    # ...which implies the same leaf in every tree:
    native_leaves = spec["native_leaves"](X)
    for r in range(len(X)):
        for t in ens.trees:
            assert mapping[(t, ens.leaf(t, X[r]))] == native_leaves[r][t], (name, r, t)
    margins = spec["native_margins"](X)      # (N, K) float64
    assert margins.shape == (N_EXPLAIN, K)

    # onnxruntime: real outputs, and margins with post_transform forced to NONE.
    model_bytes = model_proto.SerializeToString()
    sess_out = spec["ort_output"]
    onnx_out = tc.ort_session(model_bytes).run([sess_out], {INPUT_NAME: X})[0]
    assert onnx_out.dtype == np.float32
    raw = tc.ort_session(with_post_transform_none(model_proto)).run([sess_out], {INPUT_NAME: X})[0]
    ort_margins = raw[:, spec["ort_margin_cols"]].astype(np.float64)
    quirk = ens.ort_quirk_binary_all_positive()
    scale = np.maximum(1.0, np.abs(margins))
    margin_err = float((np.abs(ort_margins - margins) / scale).max())
    assert margin_err <= ONNX_TOL, f"{name}: ORT margin vs native {margin_err}"
    want = post_transform(ens, margins)
    out_err = float((np.abs(onnx_out.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))).max())
    assert out_err <= ONNX_TOL, f"{name}: ORT output vs transformed native margin {out_err}"

    # SHAP.
    phi_p, exp_p, _ = shap_values(spec["model"], X, None, outputs)
    phi_i, exp_i, _ = shap_values(spec["model"], X, B, outputs)
    add_p = check_additive(f"{name} path", phi_p, exp_p, margins)
    add_i = check_additive(f"{name} interventional", phi_i, exp_i, margins)
    path_source = "shap.TreeExplainer(model).shap_values"
    extra = {}
    if spec.get("probe_ort_quirk"):
        extra["ort_binary_all_positive_probe"] = probe_ort_binary_all_positive(model_proto, X)
    if spec.get("library_shortcut"):
        # shap delegated to LightGBM/XGBoost; compare with shap's own engine.
        phi_c, exp_c, _ = shap_internal_path(spec["model"], X, outputs)
        diff = float(np.abs(phi_c - phi_p).max())
        extra["shap_cpp_vs_library_max_abs_diff"] = diff
        assert diff <= spec["library_tol"], f"{name}: shap C++ vs library {diff}"
        if spec.get("prefer_shap_cpp"):
            # shap's XGBoost loader leaves the internal-node values at 0, so the
            # internal engine's expected_value is just base_offset: take TreeSHAP's
            # expected value (cover-weighted leaf mean) from the covers instead.
            phi_p = phi_c
            exp_lib = exp_p
            exp_p = [spec["base_margin"][k] + cover_weighted_expected(
                ens, covers, spec["leaf_values"](mapping, k)) for k in range(K)]
            extra["expected_library_vs_covers_max_abs_diff"] = max(
                abs(a - b) for a, b in zip(exp_lib, exp_p))
            extra["expected_shap_cpp_engine_reported"] = exp_c
            add_p = check_additive(f"{name} path (shap C++)", phi_p, exp_p, margins)
            path_source = spec["path_source"]
        else:
            assert max(abs(a - b) for a, b in zip(exp_c, exp_p)) <= spec["library_tol"]

    # Independent checks on the ONNX trees (covers.csv, native leaf values):
    # path-dependent TreeSHAP and exact interventional SHAP.
    ref_rows = spec.get("reference_rows", N_EXPLAIN)
    int_rows = spec.get("interventional_reference_rows", N_EXPLAIN)
    ref_err = int_err = 0.0
    bg_margins = spec["native_margins"](B)
    for k in range(K):
        lv = spec["leaf_values"](mapping, k)
        for r in range(ref_rows):
            phi_r, exp_r = reference_treeshap(ens, covers, lv, X[r], F)
            exp_r += spec["base_margin"][k]
            ref_err = max(ref_err, float(np.abs(phi_r - phi_p[r, :, k]).max()),
                          abs(exp_r - exp_p[k]))
        for r in range(int_rows):
            phi_r = reference_interventional(ens, lv, X[r], B, F)
            int_err = max(int_err, float(np.abs(phi_r - phi_i[r, :, k]).max()))
        int_err = max(int_err, abs(float(bg_margins[:, k].mean()) - exp_i[k]))
    mscale = max(1.0, float(np.abs(margins).max()))
    assert ref_err <= REFERENCE_TOL * mscale, f"{name}: reference TreeSHAP off by {ref_err}"
    assert int_err <= ADDITIVITY_TOL * mscale, f"{name}: reference interventional off by {int_err}"

    # Write.
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    if spec.get("write_model", True):
        (d / "model.onnx").write_bytes(model_bytes)
        model_path = (Path("tests/fixtures/attributions") / name / "model.onnx").as_posix()
    else:
        model_path = spec["model_path"]
    write_csv(d / "X.csv", features, X)
    write_csv(d / "background.csv", features, B)
    write_covers(d / "covers.csv", covers)
    write_csv(d / "onnx_outputs.csv", [f"out{j}" for j in range(onnx_out.shape[1])], onnx_out)
    write_csv(d / "native_margins.csv", [f"margin{k}" for k in range(K)], margins)
    header = block_header(features, K)
    write_csv(d / "shap_path.csv", header, flatten_blocks(phi_p))
    write_csv(d / "shap_interventional.csv", header, flatten_blocks(phi_i))

    n_nan = int(np.isnan(X).any(axis=1).sum())
    meta = {
        "model": model_path,
        "n_features": F,
        "n_outputs": K,
        "expected_path": exp_p,
        "expected_interventional": exp_i,
        "margin_space": spec["margin_space"],
        "native_margins_file": "native_margins.csv",
        "onnx_output": sess_out,
        "onnx_post_transform": ens.post_transform,
        "onnx_margin_columns": spec["ort_margin_cols"],
        "onnx_base_values": ens.base_values,
        "ort_binary_all_positive_case": quirk,
        "n_trees": len(ens.trees),
        "n_nodes": len(covers),
        "rows": N_EXPLAIN,
        "rows_with_nan": n_nan,
        "background_rows": len(B),
        "rows_dropped": len(dropped),
        "rows_dropped_ids": dropped_rows,
        "rows_dropped_reasons": x_reasons,
        "background_rows_dropped": len(bdropped),
        "background_rows_dropped_ids": bdropped_rows,
        "background_rows_dropped_reasons": b_reasons,
        "covers_mapping": spec["covers_mapping"],
        "shap_path_source": path_source,
        "checks": {
            "additivity_path_max_rel": add_p,
            "additivity_interventional_max_rel": add_i,
            "ort_margin_vs_native_max_rel": margin_err,
            "ort_output_vs_transformed_native_max": out_err,
            "cover_parent_vs_children_max_rel": cover_err,
            "reference_treeshap_rows": ref_rows,
            "reference_treeshap_max_abs": ref_err,
            "reference_interventional_rows": int_rows,
            "reference_interventional_max_abs": int_err,
            **extra,
        },
        "notes": spec["notes"],
        "versions": versions(),
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in d.iterdir())
    print(f"{name}: {len(ens.trees)} trees, {len(covers)} nodes ({map_stats}), "
          f"dropped {len(dropped)} {x_reasons} / bg {len(bdropped)} {b_reasons}, NaN rows {n_nan}, additivity {add_p:.2g}/{add_i:.2g}, "
          f"ORT margin {margin_err:.2g}, output {out_err:.2g}, reference {ref_err:.2g}/{int_err:.2g}, "
          f"quirk {quirk}, {size / 1024:.0f} KiB")
    return meta


def versions() -> dict:
    return {d: importlib.metadata.version(d) for d in (
        "shap", "lightgbm", "xgboost-cpu", "scikit-learn", "onnxmltools", "skl2onnx",
        "onnx", "onnxruntime", "numpy")}


def feature_names(n: int) -> list[str]:
    return [f"f{i}" for i in range(n)]


def split_rows(n: int, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation: (train, candidate hold-out rows in explain order)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_holdout:]), perm[:n_holdout]


def bg(X: np.ndarray, rows: np.ndarray, seed: int) -> dict:
    """Background candidates: X[rows] in a seeded order (the first 100 usable are kept)."""
    order = np.asarray(rows)[np.random.default_rng(seed).permutation(len(rows))]
    return {"background_candidates": X[order],
            "background_candidate_ids": [int(i) for i in order]}


# --------------------------------------------------------------------------
# LightGBM helpers
# --------------------------------------------------------------------------

def lgbm_spec_common(est: lgb.LGBMClassifier, n_classes: int) -> dict:
    booster = est.booster_
    native = lgbm_native_trees(booster)

    def leaves(X):
        idx = booster.predict(X, pred_leaf=True, num_threads=1)
        return [[f"L{int(v)}" for v in row] for row in idx]

    def margins(X):
        m = booster.predict(X, raw_score=True, num_threads=1)
        m = np.asarray(m, dtype=np.float64).reshape(len(X), -1)
        # Same thing from the leaves, in double.
        idx = booster.predict(X, pred_leaf=True, num_threads=1)
        s = np.zeros_like(m)
        for t in range(idx.shape[1]):
            for r in range(len(X)):
                s[r, t % m.shape[1]] += native[t]["nodes"][f"L{int(idx[r, t])}"]["value"]
        assert np.allclose(s, m, rtol=0, atol=1e-12), float(np.abs(s - m).max())
        return m

    def leaf_values(mapping, k):
        return {(t, o): native[t]["nodes"][n]["value"]
                for (t, o), n in mapping.items()
                if native[t]["nodes"][n]["leaf"] and t % n_classes == k}

    return {
        "native_trees": native,
        "native_leaves": leaves,
        "native_margins": margins,
        "leaf_values": leaf_values,
        "leaf_class": [t % n_classes for t in range(len(native))],
        "base_margin": [0.0] * n_classes,
        "cover_rel_tol": 0.0,
        "library_shortcut": True,
        "library_tol": 1e-9,
        "covers_mapping": LGBM_COVERS_MAPPING,
    }


def lgbm_onnx(est, graph_name: str, features: list[str], X_check: np.ndarray) -> onnx.ModelProto:
    model = convert_lightgbm(
        est, name=graph_name,
        initial_types=[(INPUT_NAME, OnnxmltoolsFloatTensorType([None, len(features)]))],
        target_opset=15, zipmap=False)
    return finalize_onnx(model, graph_name, f"{graph_name}: Candor attribution fixture",
                         features, X_check)


def lgbm_params(**kw) -> dict:
    base = dict(random_state=SEED, deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1)
    base.update(kw)
    return base


# --------------------------------------------------------------------------
# The six fixtures
# --------------------------------------------------------------------------

CARAVAN_LGBM_VERSIONS = {"1.0.0": tc.make_lgbm_1_0_0, "1.1.0": tc.make_lgbm_1_1_0}


def fixture_caravan(version: str = "1.0.0") -> dict:
    """The bundled caravan-lgbm `version`, retrained on the same split."""
    df, features, X, y = tc.load_data()
    train_idx, _ = tc.split(y)
    est = tc.fit_plain(CARAVAN_LGBM_VERSIONS[version](), X[train_idx], y[train_idx])
    model = tc.finalize_onnx(tc.convert_lgbm(est, f"caravan-lgbm-{version}"), "caravan-lgbm", version, X)
    package = f"models/caravan-lgbm/{version}"
    bundled = (REPO / package / "model.onnx").read_bytes()
    assert model.SerializeToString() == bundled, f"retrained caravan-lgbm {version} is not byte-identical"
    bundled_model = onnx.load_from_string(bundled)

    golden = pd.read_csv(REPO / package / "golden.csv")
    background = pd.read_csv(REPO / package / "background.csv")
    assert list(golden.columns[:-1]) == features and list(background.columns) == features
    cand = golden[features].to_numpy(dtype=np.float32)
    B = background[features].to_numpy(dtype=np.float32)
    spec = lgbm_spec_common(est, 1)
    spec.update({
        "name": "caravan-lgbm" if version == "1.0.0" else f"caravan-lgbm-{version}",
        "features": features, "onnx": bundled_model, "model": est,
        "write_model": False, "model_path": f"{package}/model.onnx",
        "candidates": cand, "candidate_ids": list(range(len(cand))),
        "background_candidates": B, "background_candidate_ids": list(range(len(B))),
        "shap_outputs": [0], "ort_output": "probabilities", "ort_margin_cols": [1],
        "margin_space": "log_odds",
        "reference_rows": 10, "interventional_reference_rows": 3,
        "notes": (
            "Bundled model, not copied.  The native booster is the retrained "
            f"train_caravan.make_lgbm_{version.replace('.', '_')}() on the same split (seed "
            "20261129); its ONNX export was asserted byte-identical to the bundled "
            f"model.onnx.  X = the first 50 rows of {package}/golden.csv (all routed "
            "identically by ONNX and LightGBM), background = its background.csv rows 0..99.  "
            "Margin = "
            "LightGBM raw score (log-odds of P(purchase)); ONNX probabilities column 1 = "
            "sigmoid(margin).  Covers are LightGBM's bagged counts (subsample 0.8), not "
            "training-set counts, so they differ from covers recomputed from any data.  "
            "shap_path.csv is what shap.TreeExplainer returns, i.e. LightGBM's own "
            "pred_contrib (shap delegates to it); shap's C++ engine on the same trees "
            "agrees within 1e-9 (checks.shap_cpp_vs_library_max_abs_diff)."),
    })
    return spec


def fixture_lgbm_nan() -> dict:
    Xf, y = make_classification(n_samples=3000, n_features=8, n_informative=5, n_redundant=1,
                                n_clusters_per_class=2, flip_y=0.02, class_sep=0.8,
                                random_state=SEED)
    X = Xf.astype(np.float32)
    rng = np.random.default_rng(SEED + 1)
    # NaN in f0..f3: random in f0/f2, informative (depends on y) in f1/f3.
    p = {0: np.full(len(y), 0.15), 1: np.where(y == 1, 0.35, 0.05),
         2: np.full(len(y), 0.25), 3: np.where(y == 1, 0.05, 0.30)}
    for j, pj in p.items():
        X[rng.random(len(y)) < pj, j] = np.nan
    features = feature_names(X.shape[1])
    train, cand_ids = split_rows(len(y), 500, SEED)
    est = lgb.LGBMClassifier(**lgbm_params(n_estimators=50, num_leaves=15, learning_rate=0.1,
                                           min_child_samples=20))
    est.fit(X[train], y[train])
    spec = lgbm_spec_common(est, 1)
    spec.update({
        "name": "lgbm-nan", "features": features, "model": est, "probe_ort_quirk": True,
        "onnx": lgbm_onnx(est, "lgbm_nan", features, X),
        "candidates": X[cand_ids], "candidate_ids": [int(i) for i in cand_ids],
        **bg(X, train, SEED),
        "shap_outputs": [0], "ort_output": "probabilities", "ort_margin_cols": [1],
        "margin_space": "log_odds",
        "notes": (
            "sklearn make_classification(3000 rows, 8 features, random_state=20261129) cast "
            "to float32; NaN injected in f0 (15%), f1 (35% if y=1 else 5%), f2 (25%), f3 "
            "(5% if y=1 else 30%); f4..f7 have no NaN.  Train 2500 rows, X from the 500 "
            "hold-out rows in seeded order, background 100 training rows.  LightGBM 50 "
            "trees, 15 leaves, lr 0.1.  Splits on f0..f3 have missing_type NaN: NaN takes "
            "default_left, which the converter writes as missing_value_tracks_true (both "
            "directions occur).  Splits on f4..f7 have missing_type None, where LightGBM "
            "reads NaN as 0.0; X has no NaN there (shap's own engine would send such a "
            "NaN to default_left instead).  Margin = raw log-odds; ONNX column 1 = "
            "sigmoid(margin).  checks.ort_binary_all_positive_probe: with every leaf weight "
            "made positive, ORT 1.31.1 still applies the sigmoid to the probabilities but "
            "decides the label on the raw score (s > 0.5)."),
    })
    return spec


def fixture_lgbm_multiclass() -> dict:
    Xd, y = load_wine(return_X_y=True)
    X = Xd.astype(np.float32)
    features = feature_names(X.shape[1])
    est = lgb.LGBMClassifier(**lgbm_params(n_estimators=30, num_leaves=7, learning_rate=0.1,
                                           min_child_samples=5))
    est.fit(X, y)
    order = np.random.default_rng(SEED).permutation(len(y))
    spec = lgbm_spec_common(est, 3)
    spec.update({
        "name": "lgbm-multiclass", "features": features, "model": est,
        "onnx": lgbm_onnx(est, "lgbm_multiclass", features, X),
        "candidates": X[order], "candidate_ids": [int(i) for i in order],
        **bg(X, np.arange(len(y)), SEED + 2),
        "shap_outputs": [0, 1, 2], "ort_output": "probabilities", "ort_margin_cols": [0, 1, 2],
        "margin_space": "raw",
        "notes": (
            "sklearn wine (178 rows, 13 features, 3 classes) cast to float32, trained on all "
            "rows; X = 50 rows in seeded order, background = 100 seeded rows (they overlap). "
            "LightGBM multiclass, 30 iterations x 3 classes = 90 trees, 7 leaves; tree t "
            "belongs to class t % 3 (ONNX class_ids likewise).  Margins are the per-class "
            "raw scores (softmax logits, not log-odds); ONNX probabilities = softmax(margins) "
            "(post_transform SOFTMAX).  SHAP blocks: f*_c0, f*_c1, f*_c2."),
    })
    return spec


def xgb_leaf_margin_spec(est: xgb.XGBClassifier, base_margin: float) -> dict:
    booster = est.get_booster()
    native = xgb_native_trees(booster)

    def leaves(X):
        idx = booster.predict(xgb.DMatrix(X), pred_leaf=True)
        return [[int(v) for v in row] for row in idx]

    def margins(X):
        idx = booster.predict(xgb.DMatrix(X), pred_leaf=True)
        m = np.array([[base_margin + sum(native[t]["nodes"][int(v)]["value"]
                                         for t, v in enumerate(row))] for row in idx])
        f32 = booster.predict(xgb.DMatrix(X), output_margin=True).astype(np.float64)
        assert np.allclose(m[:, 0], f32, rtol=1e-6, atol=1e-6), float(np.abs(m[:, 0] - f32).max())
        return m

    def leaf_values(mapping, k):
        return {(t, o): native[t]["nodes"][n]["value"] for (t, o), n in mapping.items()
                if native[t]["nodes"][n]["leaf"]}

    return {"native_trees": native, "native_leaves": leaves, "native_margins": margins,
            "leaf_values": leaf_values, "leaf_class": [0] * len(native),
            "base_margin": [base_margin]}


def breast_cancer_split():
    Xd, y = load_breast_cancer(return_X_y=True)
    X = Xd.astype(np.float32)
    train, cand_ids = split_rows(len(y), 150, SEED)
    return X, y, train, cand_ids


def fixture_xgb_binary() -> dict:
    X, y, train, cand_ids = breast_cancer_split()
    features = feature_names(X.shape[1])
    est = xgb.XGBClassifier(n_estimators=50, max_depth=4, learning_rate=0.1, tree_method="hist",
                            n_jobs=1, random_state=SEED, objective="binary:logistic")
    est.fit(X[train], y[train])
    cfg = json.loads(est.get_booster().save_config())
    base_score_str = cfg["learner"]["learner_model_param"]["base_score"]
    base_score = float(json.loads(base_score_str)[0])
    explainer = shap.TreeExplainer(est)
    base_margin = float(np.asarray(explainer.model.base_offset).ravel()[0])
    assert abs(base_margin - float(scipy.special.logit(base_score))) <= 1e-15
    model = convert_xgboost(est, name="xgb_binary",
                            initial_types=[(INPUT_NAME, OnnxmltoolsFloatTensorType([None, len(features)]))],
                            target_opset=15)
    model = finalize_onnx(model, "xgb_binary", "xgb_binary: Candor attribution fixture",
                          features, X)
    spec = xgb_leaf_margin_spec(est, base_margin)
    ens = OnnxEnsemble(model)
    spec.update({
        "name": "xgb-binary", "features": features, "model": est, "onnx": model,
        "candidates": X[cand_ids], "candidate_ids": [int(i) for i in cand_ids],
        **bg(X, train, SEED),
        "shap_outputs": [0], "ort_output": "probabilities", "ort_margin_cols": [1],
        "margin_space": "log_odds",
        "cover_rel_tol": 1e-5,
        "library_shortcut": True, "prefer_shap_cpp": True, "library_tol": 1e-5,
        "path_source": (
            "phi: shap's C++ TreeSHAP (TreeExplainer with model.model_type='internal'), "
            "double precision; expected: base margin + cover-weighted leaf means (sum_hessian). "
            "TreeExplainer's default (XGBoost pred_contribs, float32) agrees within "
            "checks.shap_cpp_vs_library_max_abs_diff / expected_library_vs_covers_max_abs_diff"),
        "covers_mapping": (
            "onnxmltools renumbers XGBoost nodes in depth-first pre-order of the get_dump "
            "JSON (children in [yes, no] order), so ONNX node ids are not XGBoost's nodeid. "
            "Mapping: walk each ONNX tree (tree_id t == booster tree t) from its root in "
            "parallel with the booster's JSON model (save_raw('json')), ONNX true branch = "
            "left child = 'yes' (x < split_condition, BRANCH_LT); asserted per node: "
            "split_indices, float32 threshold (exactly equal), missing_value_tracks_true == "
            "default_left, leaf weight == leaf value.  cover = sum_hessian (float32; "
            "equal to get_dump's 'cover' to its printed precision)."),
        "notes": (
            "sklearn breast cancer (569 rows, 30 features) cast to float32; train 419 rows, "
            "X from the 150 hold-out rows in seeded order, background 100 training rows. "
            "XGBClassifier(50 trees, depth 4, lr 0.1, hist).  XGBoost 3 estimates "
            f"base_score from the labels: learner_model_param.base_score = {base_score_str} "
            "(a probability, written as a bracketed list since XGBoost 3).  Margin = "
            f"logit(base_score) = {base_margin!r} + sum of leaf values, summed in double "
            "(XGBoost's own output_margin is float32 and agrees within 1e-6).  onnxmltools "
            "writes base_values = [-log(1/float32(base_score) - 1)] computed in float32 "
            f"({ens.base_values}); it would write no base_values at all if base_score were "
            "exactly 0.5.  shap_path.csv is shap's C++ engine in double precision: "
            "TreeExplainer's default for XGBoost is XGBoost's pred_contribs, which "
            "computes in float32 (difference in checks.shap_cpp_vs_library_max_abs_diff). "
            "ONNX column 1 = sigmoid(margin) (leaf weights have mixed signs, so ORT's "
            "all-positive binary case does not apply).  shap's internal engine reports "
            "expected_value = base margin only (checks.expected_shap_cpp_engine_reported): "
            "its XGBoost loader leaves internal-node values at 0; not used here."),
    })
    return spec


def fixture_rf() -> dict:
    X, y, train, cand_ids = breast_cancer_split()
    features = feature_names(X.shape[1])
    n_trees = 20
    est = RandomForestClassifier(n_estimators=n_trees, max_depth=6, random_state=SEED, n_jobs=1)
    est.fit(X[train], y[train])
    model = convert_sklearn(est, name="rf_average",
                            initial_types=[(INPUT_NAME, Skl2onnxFloatTensorType([None, len(features)]))],
                            target_opset=dict(OPSETS), options={"zipmap": False})
    model = finalize_onnx(model, "rf_average", "rf_average: Candor attribution fixture",
                          features, X)

    def p1(tr, i):
        v = tr.value[i, 0]
        return float(v[1] / v.sum())

    native = sklearn_native_trees(est.estimators_, p1)
    spec = {
        "name": "rf-average", "features": features, "model": est, "onnx": model,
        "native_trees": native,
        "native_leaves": lambda Xc: est.apply(Xc).tolist(),
        "native_margins": lambda Xc: est.predict_proba(Xc)[:, [1]].astype(np.float64),
        "leaf_values": lambda mapping, k: {
            (t, o): native[t]["nodes"][n]["value"] / n_trees for (t, o), n in mapping.items()
            if native[t]["nodes"][n]["leaf"]},
        "leaf_class": [0] * n_trees, "leaf_scale": 1.0 / n_trees, "base_margin": [0.0],
        "cover_rel_tol": 0.0,
        "candidates": X[cand_ids], "candidate_ids": [int(i) for i in cand_ids],
        **bg(X, train, SEED),
        "shap_outputs": [1], "ort_output": "probabilities", "ort_margin_cols": [1],
        "margin_space": "probability",
        "covers_mapping": (
            "skl2onnx keeps sklearn's node numbering: ONNX (tree_id t, node_id i) is "
            "estimators_[t].tree_ node i; true branch = children_left (x <= threshold, "
            "BRANCH_LEQ).  Verified by the same parallel walk (feature, threshold, leaf "
            "weight == P(class 1)/20); skl2onnx rounds each double threshold DOWN to the "
            "largest float32 <= it (not to nearest), so float32 x <= it exactly when "
            "sklearn's x <= threshold.  cover = tree_.weighted_n_node_samples "
            "(bootstrap-weighted in-bag sample counts)."),
        "notes": (
            "Same data and split as xgb-binary.  RandomForestClassifier(20 trees, depth 6, "
            "bootstrap).  skl2onnx writes one class id (0) per leaf holding "
            "P(class 1)/n_trees (the leaf's class-1 fraction divided by 20), post_transform "
            "NONE: the ensemble SUM of those weights is the forest's AVERAGE P(class 1). "
            "All weights are >= 0 and there is one class id with two labels, so ORT takes "
            "its binary all-positive path and writes [1 - s, s] (no transform), which is "
            "exactly predict_proba; its label is 1 iff s > 0.5, as in predict.  Margin space = probability of class 1; SHAP values are "
            "shap's class-1 output.  sklearn 1.9 trees store class fractions in "
            "tree_.value."),
    }
    return spec


def fixture_gbr() -> dict:
    Xd, y = load_diabetes(return_X_y=True)
    X = Xd.astype(np.float32)
    features = feature_names(X.shape[1])
    train, cand_ids = split_rows(len(y), 100, SEED)
    lr = 0.1
    est = GradientBoostingRegressor(n_estimators=50, max_depth=3, learning_rate=lr,
                                    random_state=SEED)
    est.fit(X[train], y[train])
    model = convert_sklearn(est, name="gbr_regressor",
                            initial_types=[(INPUT_NAME, Skl2onnxFloatTensorType([None, len(features)]))],
                            target_opset=dict(OPSETS))
    model = finalize_onnx(model, "gbr_regressor", "gbr_regressor: Candor attribution fixture",
                          features, X)
    init = float(est.init_.constant_.ravel()[0])
    native = sklearn_native_trees(est.estimators_[:, 0], lambda tr, i: float(tr.value[i, 0, 0]))
    spec = {
        "name": "gbr-regressor", "features": features, "model": est, "onnx": model,
        "native_trees": native,
        "native_leaves": lambda Xc: est.apply(Xc).reshape(len(Xc), -1).tolist(),
        "native_margins": lambda Xc: est.predict(Xc).reshape(-1, 1).astype(np.float64),
        "leaf_values": lambda mapping, k: {
            (t, o): native[t]["nodes"][n]["value"] * lr for (t, o), n in mapping.items()
            if native[t]["nodes"][n]["leaf"]},
        "leaf_class": [0] * len(native), "leaf_scale": lr, "base_margin": [init],
        "cover_rel_tol": 0.0,
        "candidates": X[cand_ids], "candidate_ids": [int(i) for i in cand_ids],
        **bg(X, train, SEED),
        "shap_outputs": [0], "ort_output": "variable", "ort_margin_cols": [0],
        "margin_space": "raw",
        "covers_mapping": (
            "skl2onnx keeps sklearn's node numbering: ONNX (tree_id t, node_id i) is "
            "estimators_[t, 0].tree_ node i; true branch = children_left (BRANCH_LEQ). "
            "Verified by the parallel walk (feature, threshold rounded down to float32 as "
            "skl2onnx does, target weight == float32(0.1 * leaf value)).  cover = tree_.weighted_n_node_samples."),
        "notes": (
            "sklearn diabetes (442 rows, 10 features) cast to float32; train 342 rows, X from "
            "the 100 hold-out rows in seeded order, background 100 training rows. "
            "GradientBoostingRegressor(50 trees, depth 3, lr 0.1).  ONNX: "
            "TreeEnsembleRegressor, post_transform NONE, base_values = [init_ mean of y] "
            f"({init!r}, float32 in ONNX), target weights = 0.1 * leaf value.  Margin = "
            "predict(); shap's expected values include the init constant."),
    }
    return spec


FIXTURES = [fixture_caravan, lambda: fixture_caravan("1.1.0"), fixture_lgbm_nan,
            fixture_lgbm_multiclass, fixture_xgb_binary, fixture_rf, fixture_gbr]


# --------------------------------------------------------------------------
# Stress fixture (--stress): a larger LightGBM model for speed tests
# --------------------------------------------------------------------------

STRESS_OUT_DEFAULT = REPO / "tests" / "fixtures" / "stress"
STRESS_NAME = "lgbm-500x6"
STRESS_N_X = 300
STRESS_N_FEATURES = 50
STRESS_N_TREES = 500
STRESS_MAX_DEPTH = 6


def stress_model() -> dict:
    """Seeded LightGBM binary classifier, 500 trees, depth 6, 50 features.

    Returns the estimator, its finalized ONNX model and the X / background rows."""
    Xf, y = make_classification(n_samples=5000, n_features=STRESS_N_FEATURES, n_informative=20,
                                n_redundant=10, n_clusters_per_class=3, flip_y=0.02,
                                class_sep=0.8, random_state=SEED)
    X = Xf.astype(np.float32)
    features = feature_names(X.shape[1])
    train, cand_ids = split_rows(len(y), 1000, SEED)
    est = lgb.LGBMClassifier(**lgbm_params(n_estimators=STRESS_N_TREES, max_depth=STRESS_MAX_DEPTH,
                                           num_leaves=63, learning_rate=0.05,
                                           min_child_samples=5))
    est.fit(X[train], y[train])
    model = lgbm_onnx(est, "lgbm_500x6", features, X)
    X_rows = np.ascontiguousarray(X[cand_ids[:STRESS_N_X]])
    b = bg(X, train, SEED)
    B = np.ascontiguousarray(b["background_candidates"][:N_BACKGROUND])
    return {"est": est, "onnx": model, "features": features, "X": X_rows, "B": B,
            "X_ids": [int(i) for i in cand_ids[:STRESS_N_X]],
            "B_ids": b["background_candidate_ids"][:N_BACKGROUND]}


def build_stress(out: Path) -> None:
    sm = stress_model()
    est, model, features, X, B = sm["est"], sm["onnx"], sm["features"], sm["X"], sm["B"]
    booster = est.booster_
    spec = lgbm_spec_common(est, 1)
    native = spec["native_trees"]
    assert len(native) == STRESS_N_TREES, len(native)
    ens = OnnxEnsemble(model)
    # Same ONNX -> native mapping / covers code as the lgbm-nan fixture.
    mapping, map_stats = map_onnx_to_native(ens, native, spec["leaf_class"])
    covers, cover_err = covers_from_mapping(ens, native, mapping, spec["cover_rel_tol"])
    depth = 0
    for t, tree in ens.trees.items():
        stack = [(ens.roots[t], 0)]
        while stack:
            n, dpt = stack.pop()
            depth = max(depth, dpt)
            if not tree[n]["leaf"]:
                stack += [(tree[n]["true"], dpt + 1), (tree[n]["false"], dpt + 1)]
    assert depth <= STRESS_MAX_DEPTH, depth
    # onnxruntime vs native margins (sanity; the rows are not filtered).
    model_bytes = model.SerializeToString()
    margins = np.asarray(booster.predict(X, raw_score=True, num_threads=1), dtype=np.float64)
    ort_m = tc.ort_session(with_post_transform_none(model)).run(["probabilities"], {INPUT_NAME: X})[0]
    m_err = float((np.abs(ort_m[:, 1].astype(np.float64) - margins)
                   / np.maximum(1.0, np.abs(margins))).max())
    assert m_err <= ONNX_TOL, m_err
    mismatched = 0
    leaves = booster.predict(X, pred_leaf=True, num_threads=1)
    for r in range(len(X)):
        for t in ens.trees:
            if mapping[(t, ens.leaf(t, X[r]))] != f"L{int(leaves[r, t])}":
                mismatched += 1

    d = out / STRESS_NAME
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(model_bytes)
    write_csv(d / "X.csv", features, X)
    write_csv(d / "background.csv", features, B)
    write_covers(d / "covers.csv", covers)
    try:
        model_path = (d / "model.onnx").resolve().relative_to(REPO).as_posix()
    except ValueError:
        model_path = (d / "model.onnx").as_posix()
    meta = {
        "model": model_path,
        "n_features": len(features),
        "n_trees": len(native),
        "max_depth": STRESS_MAX_DEPTH,
        "max_depth_observed": depth,
        "num_leaves": 63,
        "n_nodes": len(mapping),
        "x_rows": len(X), "background_rows": len(B),
        "x_row_ids": sm["X_ids"], "background_row_ids": sm["B_ids"],
        "onnx_output": "probabilities", "onnx_margin_columns": [1], "margin_space": "log_odds",
        "checks": {"map_stats": map_stats, "cover_sum_max_rel_err": cover_err,
                   "ort_margin_vs_native_max_rel_err": m_err,
                   "x_tree_leaf_mismatches_onnx_vs_native": mismatched},
        "covers_mapping": spec["covers_mapping"],
        "notes": (
            f"Stress/speed fixture, no SHAP goldens.  sklearn make_classification(5000 rows, "
            f"50 features, 20 informative, 10 redundant, 3 clusters per class, flip_y 0.02, "
            f"class_sep 0.8, random_state={SEED}) cast to float32, no NaN.  Train 4000 rows "
            "(seeded split), X = the first 300 of the 1000 hold-out rows in seeded order, "
            "background = 100 training rows in seeded order.  LightGBM binary, 500 trees, "
            "max_depth 6, num_leaves 63, lr 0.05, min_child_samples 5, deterministic, "
            "single-threaded.  Exported with onnxmltools like the other LightGBM fixtures "
            "(input 'input' float32 [None, 50], no ZipMap, opsets pinned to ai.onnx 17 / "
            "ai.onnx.ml 3, IR 8).  Rows are NOT filtered for float32-threshold routing "
            "differences (see checks.x_tree_leaf_mismatches_onnx_vs_native).  Written by "
            "models/attribution_goldens.py --stress; timed by --peer-speeds (key 'stress')."),
        "versions": versions(),
    }
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    print(f"{STRESS_NAME}: {len(native)} trees, {len(mapping)} nodes, depth {depth}, "
          f"model.onnx {len(model_bytes) / 1024:.0f} KiB, total {total / 1024:.0f} KiB under {d}")


# --------------------------------------------------------------------------
# Peer speeds (caravan-lgbm, single-threaded)
# --------------------------------------------------------------------------

def timed(fn, repeats: int) -> dict:
    fn()  # warm-up (numba / OpenMP / caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"seconds_median": float(np.median(times)), "seconds_min": float(min(times)),
            "repeats": repeats}


def time_peers(est, X, B, *, path_repeats: int, with_cpp: bool, label: str) -> dict:
    """Times shap (path-dependent, and shap's own C++ engine when `with_cpp`),
    LightGBM pred_contrib on X[:300] and shap interventional against B on
    X[:100], single-threaded."""
    booster = est.booster_
    X300 = np.ascontiguousarray(X[:300])
    X100 = np.ascontiguousarray(X[:100])
    path_expl = shap.TreeExplainer(est, feature_perturbation="tree_path_dependent")
    int_expl = shap.TreeExplainer(est, data=B, feature_perturbation="interventional",
                                  model_output="raw")
    runs = {
        "shap_tree_path_dependent": (
            lambda: path_expl.shap_values(X300), 300, path_repeats,
            "shap.TreeExplainer(model, feature_perturbation='tree_path_dependent')"
            ".shap_values(X[300]); for LightGBM shap calls booster.predict(pred_contrib=True)"),
        "lightgbm_pred_contrib": (
            lambda: booster.predict(X300, pred_contrib=True, num_threads=1), 300, path_repeats,
            "booster.predict(X[300], pred_contrib=True, num_threads=1)"),
    }
    if with_cpp:
        cpp_expl = shap.TreeExplainer(est, feature_perturbation="tree_path_dependent")
        cpp_expl.model.model_type = "internal"
        runs["shap_cpp_tree_path_dependent"] = (
            lambda: cpp_expl.shap_values(X300), 300, 5,
            "same explainer with explainer.model.model_type='internal': shap's own C++ "
            "TreeSHAP on the parsed trees")
    runs["shap_interventional_100_background"] = (
        lambda: int_expl.shap_values(X100), 100, 3,
        "shap.TreeExplainer(model, data=background[100], feature_perturbation="
        "'interventional', model_output='raw').shap_values(X[100]), with shap's default "
        "check_additivity=True (one extra shap predict pass)")
    results = {}
    for key, (fn, rows, repeats, what) in runs.items():
        r = timed(fn, repeats)
        r["rows"] = rows
        r["rows_per_second"] = rows / r["seconds_median"]
        r["what"] = what
        results[key] = r
        print(f"{label}{key}: {r['rows_per_second']:.0f} rows/s (median of {repeats})")
    return results


def peer_speeds(out: Path) -> None:
    spec = fixture_caravan()
    B = np.ascontiguousarray(spec["background_candidates"][:N_BACKGROUND])
    # spec["candidates"] holds all 300 golden rows.
    results = time_peers(spec["model"], spec["candidates"], B, path_repeats=10, with_cpp=True,
                         label="")
    results_stress = stress_peer_speeds()
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    doc = {
        "model": CARAVAN_MODEL,
        "trees": 300, "n_features": 78, "background_rows": len(B),
        "rows": "models/caravan-lgbm/1.0.0/golden.csv rows 0..299 (path, pred_contrib) "
                "and 0..99 (interventional); background.csv rows 0..99",
        "command": "OMP_NUM_THREADS=1 .venv-models/bin/python models/attribution_goldens.py "
                   "--peer-speeds",
        "threads": "OMP_NUM_THREADS=1 (set by the script before imports), "
                   "num_threads=1 for LightGBM; shap's C++ code is single-threaded",
        "timing": "time.perf_counter around the whole call, after one warm-up call; "
                  "rows_per_second = rows / median",
        "results": results,
        "stress": {
            "model": (Path("tests/fixtures/stress") / STRESS_NAME / "model.onnx").as_posix(),
            "trees": STRESS_N_TREES, "max_depth": STRESS_MAX_DEPTH, "num_leaves": 63,
            "n_features": STRESS_N_FEATURES, "background_rows": N_BACKGROUND,
            "rows": f"tests/fixtures/stress/{STRESS_NAME}/X.csv rows 0..299 (path, "
                    "pred_contrib) and 0..99 (interventional); background.csv rows 0..99 "
                    "(the model is retrained in-process by stress_model(), same seed)",
            "results_stress": results_stress,
        },
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg(),
                    "note": "2 cores shared with other work; figures are indicative"},
        "versions": versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer_speeds.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def stress_peer_speeds() -> dict:
    """Same timings as for caravan-lgbm (minus shap's C++ engine) on the stress model."""
    sm = stress_model()
    return time_peers(sm["est"], sm["X"], sm["B"], path_repeats=5, with_cpp=False,
                      label="stress ")


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="fixture folder (default: tests/fixtures/attributions; "
                         "tests/fixtures/stress with --stress)")
    ap.add_argument("--peer-speeds", action="store_true",
                    help="time shap / LightGBM on caravan-lgbm instead of writing fixtures")
    ap.add_argument("--stress", action="store_true",
                    help="write only the stress fixture (default out: tests/fixtures/stress)")
    args = ap.parse_args(argv)
    if importlib.metadata.version("onnxruntime") != ORT_VERSION:
        raise SystemExit(f"onnxruntime=={ORT_VERSION} required")
    if shap.__version__ != SHAP_VERSION:
        raise SystemExit(f"shap=={SHAP_VERSION} required, found {shap.__version__}")
    warnings.filterwarnings("ignore", message=".*LightGBM binary classifier.*")
    if args.peer_speeds and args.stress:
        raise SystemExit("--peer-speeds and --stress are separate runs")
    if args.stress:
        build_stress(args.out or STRESS_OUT_DEFAULT)
        return 0
    if args.out is None:
        args.out = OUT_DEFAULT
    if args.peer_speeds:
        peer_speeds(args.out)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for make in FIXTURES:
        build_fixture(args.out, make())
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"total {total / 1024:.0f} KiB under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
