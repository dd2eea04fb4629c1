"""Fixtures for the ai.onnx.ml opset-5 ``TreeEnsemble`` operator (Candor's Rust tests).

Run from the repository root (Python 3.11, the ``.venv-models`` virtualenv
with onnx 1.23.2, onnxruntime 1.31.1, numpy; nothing else is needed)::

    .venv-models/bin/python models/opset5_fixtures.py            # --out DIR to write elsewhere

It takes a few seconds, single-threaded.  Every random draw comes from
``numpy.random.default_rng(SEED)``; re-runs reproduce all files byte for byte.

It writes ``tests/fixtures/trees-opset5/<name>/`` for two models.  Both take
``input`` float32 [N, F] and have an output ``margin`` float32 [N, 1] that is
the ``TreeEnsemble`` output itself (n_targets=1, aggregate_function=SUM,
post_transform=NONE, IR 10, opsets ai.onnx 21 / ai.onnx.ml 5).

``lgbm-nan-v5``
    ``tests/fixtures/attributions/lgbm-nan/model.onnx`` (a LightGBM binary
    TreeEnsembleClassifier, post_transform LOGISTIC, 50 trees) rewritten node
    for node as one ``TreeEnsemble``: same trees in the same order, same
    features, float32 thresholds, BRANCH_LEQ, missing_value_tracks_true and
    float32 leaf weights.  A second output ``probabilities`` [N, 2] =
    [1 - sigmoid(margin), sigmoid(margin)] is built from Sigmoid/Sub/Concat
    after the tree node, as the original classifier's output.  X.csv,
    background.csv, native_margins.csv, shap_path.csv and
    shap_interventional.csv are byte copies of the original fixture (the
    explained rows and goldens do not change); covers.csv is the original one
    re-keyed to the opset-5 node identity (below); meta.json["v3_node_map"]
    maps every opset-5 node back to the original (nodes_treeids,
    nodes_nodeids).
``member-v5``
    a hand-built 5-tree ensemble over 4 features (f0, f2 continuous; f1, f3
    integer category codes) with BRANCH_MEMBER splits (one to three per
    tree), every other mode (LEQ, LT, GTE, GT, EQ, NEQ), nodes with
    missing_value_tracks_true=1, a feature repeated along a path, and
    invented integer covers (parent = sum of children).  Leaf weights are
    multiples of 1/16, so every margin is exact in float32 and onnxruntime
    must reproduce the Python traversal bit for bit.  SHAP goldens are exact
    brute-force enumerations over all 2^4 feature subsets (see below).

Layout of the opset-5 attributes
--------------------------------
* Split nodes live in ``nodes_*`` (index i), leaves in ``leaf_*`` (index j).
  ``nodes_trueleafs[i] == 1`` means ``nodes_truenodeids[i]`` is a leaf index
  j (into leaf_weights / leaf_targetids), else a node index; same for the
  false side.  Every leaf is referenced by exactly one parent, every non-root
  node by exactly one parent; trees are contiguous blocks and
  ``tree_roots[t]`` is the first node of tree t.  No tree is a lone leaf.
* lgbm-nan-v5: nodes and leaves are numbered in depth-first pre-order, true
  branch first.  member-v5: breadth-first within each tree (nodes and leaves
  separately), so child indices are not "i + 1" and the order of the
  BRANCH_MEMBER nodes in ``nodes_modes`` differs from depth-first order.
* ``membership_values`` (float32 tensor): for each node i with mode
  BRANCH_MEMBER (6), in increasing i, its set's values followed by one NaN
  (so the tensor ends with NaN and holds as many NaNs as MEMBER nodes).
  ``nodes_splits[i]`` of a MEMBER node is NaN (unused).
* All tensors (nodes_splits, leaf_weights, membership_values) are float32:
  onnx shape inference rejects a nodes_splits type that differs from the
  input type.  ``nodes_modes`` is a uint8 tensor.

Node identity in covers.csv (both fixtures)
-------------------------------------------
``tree_id,node_id,cover``, one row per node, leaves included: tree_id = the
position of the tree in ``tree_roots``; node_id = i for a split node,
-(j + 1) for leaf j.

Routing rule (onnxruntime 1.31.1 == the ONNX spec, checked here)
---------------------------------------------------------------
A node goes to its true branch iff the comparison holds, or x is NaN and
missing_value_tracks_true = 1.  NaN compares false for LEQ/LT/GTE/GT/EQ and
true for NEQ (IEEE !=), whatever missing_value_tracks_true says.  MEMBER holds
iff x equals a member of the set (NaN is never a member).

onnxruntime caveat (probed while writing this script; the fixtures avoid it):
ORT unrolls a MEMBER set into a chain of BRANCH_EQ nodes when it has < 31
values all in [0, 30] (exact equality), but otherwise ("big set": a value
< 0 or > 30, or >= 31 values) it truncates x to an integer before the lookup,
so x = 2.5 is a member of {2, 3, 40}.  Here every categorical value in X and
background.csv is an integer code, so both paths give the spec result;
member-v5 has one big set ({4, 9, 40} in tree 4) to exercise ORT's path.

Also: the ONNX Python reference evaluator (onnx.reference, 1.23.2) mis-parses
membership_values containing 0.0 (``while (v := next(it)) and ...`` stops at
0.0) and assigns sets in depth-first order instead of nodes_modes order; it is
NOT used as an oracle.  meta.json records how many rows it gets wrong.

SHAP goldens of member-v5 (M = 4 features, phi by the Shapley formula over
all subsets S)
---------------------------------------------------------------------------
* path-dependent: v(S) = sum over trees of a cover-weighted descent: at a
  split on a feature in S follow the row (rule above); otherwise return
  (cover(true) * v_true + cover(false) * v_false) / cover(node).
  expected_path = v(empty set).  This is what exact (path-dependent) TreeSHAP
  computes, including repeated features on a path.
* interventional: v(S) = mean over background rows b of margin(x_S, b_~S);
  expected_interventional = mean margin(background).
The same enumeration is run on lgbm-nan-v5 (256 subsets) and must reproduce
the copied goldens (to 1e-6: they were computed by shap on the native
LightGBM model, with float64 leaf values).

Checks (asserted): onnx.checker (full_check) passes; each model parses back
to the intended structure; onnxruntime's ``margin`` equals the Python
traversal (member-v5: exactly; lgbm-nan-v5: 1e-6 x max(1, |m|)) on X, on the
background and on every interventional hybrid row; lgbm-nan-v5's margin
equals native_margins.csv within 1e-5 relative and its probabilities the
original model's onnx_outputs.csv within 1e-6; covers are consistent;
sum(phi) == margin - expected (1e-9) for both brute-force SHAP kinds;
member-v5's X exercises both branches of every split node.
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
sys.dont_write_bytecode = True

import argparse  # noqa: E402
import csv  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT_DEFAULT = REPO / "tests" / "fixtures" / "trees-opset5"
SRC_LGBM = REPO / "tests" / "fixtures" / "attributions" / "lgbm-nan"

SEED = 20260530  # the first seed from 20260517 on whose 40 X rows reach every member-v5 leaf
ORT_VERSION = "1.31.1"
ONNX_VERSION = "1.23.2"
OPSETS = {"": 21, "ai.onnx.ml": 5}
IR_VERSION = 10
INPUT_NAME = "input"
MARGIN = "margin"
PROBS = "probabilities"

LEQ, LT, GTE, GT, EQ, NEQ, MEMBER = range(7)
MODE_NAMES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ", "BRANCH_MEMBER"]

COVERS_NOTE = (
    "covers.csv node identity (opset 5): tree_id = index of the tree in tree_roots; node_id = i, the "
    "position in the nodes_* arrays, for a split node, and node_id = -(j + 1) for the leaf at position j "
    "of leaf_weights / leaf_targetids (nodes_trueleafs/nodes_falseleafs = 1 mean nodes_truenodeids/"
    "nodes_falsenodeids hold such a j).  One row per node, leaves included; cover(split) == cover(true "
    "child) + cover(false child)."
)
MEMBERSHIP_NOTE = (
    "membership_values (float32): for each BRANCH_MEMBER node in increasing nodes_* index, its set's "
    "values then one NaN (trailing NaN included; #NaN == #MEMBER nodes).  nodes_splits of a MEMBER node "
    "is NaN and unused."
)
RULE_NOTE = (
    "Routing (onnxruntime 1.31.1 == spec): true branch iff the comparison holds, or x is NaN and "
    "missing_value_tracks_true = 1.  NaN compares false for LEQ/LT/GTE/GT/EQ, true for NEQ; MEMBER holds "
    "iff x equals a set member (NaN never does)."
)


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------

def fmt(v) -> str:
    """Exact, shortest text for a float: '' for NaN, integers without '.0'."""
    v = float(v)
    if math.isnan(v):
        return ""
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for r in rows:
            w.writerow([v if isinstance(v, str) else fmt(v) for v in r])


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    data = np.array([[float(c) if c != "" else np.nan for c in r] for r in rows[1:]], dtype=np.float64)
    return rows[0], data


def write_json(path: Path, obj) -> None:
    """indent=2, but every innermost list of scalars on one line."""
    text = json.dumps(obj, indent=2, allow_nan=False)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]"
                  if '"' not in m.group(1) else m.group(0), text)
    path.write_text(text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# The opset-5 ensemble, in Python
# --------------------------------------------------------------------------

@dataclass
class Ensemble:
    """Flat opset-5 arrays plus covers (cover_node[i], cover_leaf[j])."""

    n_features: int
    tree_roots: list[int] = field(default_factory=list)
    featureids: list[int] = field(default_factory=list)
    splits: list[float] = field(default_factory=list)        # float32 values (NaN for MEMBER)
    modes: list[int] = field(default_factory=list)
    truenodeids: list[int] = field(default_factory=list)
    trueleafs: list[int] = field(default_factory=list)
    falsenodeids: list[int] = field(default_factory=list)
    falseleafs: list[int] = field(default_factory=list)
    mvt: list[int] = field(default_factory=list)
    sets: list[tuple[float, ...] | None] = field(default_factory=list)
    leaf_weights: list[float] = field(default_factory=list)  # float32 values
    leaf_targetids: list[int] = field(default_factory=list)
    cover_node: list[float] = field(default_factory=list)
    cover_leaf: list[float] = field(default_factory=list)

    @property
    def n_nodes(self) -> int:
        return len(self.modes)

    def membership_values(self) -> list[float]:
        out: list[float] = []
        for i in range(self.n_nodes):
            if self.modes[i] == MEMBER:
                out.extend(self.sets[i])
                out.append(float("nan"))
        return out


def f32(v) -> float:
    return float(np.float32(v))


def tensor(name: str, dtype, values) -> TensorProto:
    arr = np.asarray(values, dtype=dtype)
    return numpy_helper.from_array(arr, name=name)


def tree_ensemble_node(ens: Ensemble, output: str) -> onnx.NodeProto:
    attrs = dict(
        n_targets=1,
        aggregate_function=1,   # SUM
        post_transform=0,       # NONE
        tree_roots=ens.tree_roots,
        nodes_featureids=ens.featureids,
        nodes_splits=tensor("nodes_splits", np.float32, ens.splits),
        nodes_modes=tensor("nodes_modes", np.uint8, ens.modes),
        nodes_truenodeids=ens.truenodeids,
        nodes_trueleafs=ens.trueleafs,
        nodes_falsenodeids=ens.falsenodeids,
        nodes_falseleafs=ens.falseleafs,
        nodes_missing_value_tracks_true=ens.mvt,
        leaf_targetids=ens.leaf_targetids,
        leaf_weights=tensor("leaf_weights", np.float32, ens.leaf_weights),
    )
    if any(m == MEMBER for m in ens.modes):
        attrs["membership_values"] = tensor("membership_values", np.float32, ens.membership_values())
    return helper.make_node("TreeEnsemble", [INPUT_NAME], [output], name="tree_ensemble",
                            domain="ai.onnx.ml", **attrs)


def make_model(ens: Ensemble, graph_name: str, with_probabilities: bool, doc: str) -> onnx.ModelProto:
    nodes = [tree_ensemble_node(ens, MARGIN)]
    outputs = [helper.make_tensor_value_info(MARGIN, TensorProto.FLOAT, [None, 1])]
    inits = []
    if with_probabilities:
        inits.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), name="one"))
        nodes += [
            helper.make_node("Sigmoid", [MARGIN], ["p1"], name="sigmoid"),
            helper.make_node("Sub", ["one", "p1"], ["p0"], name="one_minus"),
            helper.make_node("Concat", ["p0", "p1"], [PROBS], name="concat", axis=1),
        ]
        outputs.append(helper.make_tensor_value_info(PROBS, TensorProto.FLOAT, [None, 2]))
    graph = helper.make_graph(
        nodes, graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, ens.n_features])],
        outputs, initializer=inits)
    model = helper.make_model(
        graph, ir_version=IR_VERSION, producer_name="candor-opset5-fixtures", producer_version="1",
        opset_imports=[helper.make_opsetid(d, v) for d, v in OPSETS.items()], doc_string=doc)
    onnx.checker.check_model(model, full_check=True)
    return model


def parse_model(model: onnx.ModelProto, n_features: int) -> Ensemble:
    """Decode the TreeEnsemble node of `model` by the spec alone (no covers)."""
    (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsemble"]
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    arr = lambda k: numpy_helper.to_array(a[k])  # noqa: E731
    assert a["n_targets"] == 1 and a["aggregate_function"] == 1 and a["post_transform"] == 0
    ens = Ensemble(n_features=n_features)
    ens.tree_roots = list(a["tree_roots"])
    ens.featureids = list(a["nodes_featureids"])
    ens.splits = [float(v) for v in arr("nodes_splits")]
    ens.modes = [int(v) for v in arr("nodes_modes")]
    ens.truenodeids = list(a["nodes_truenodeids"])
    ens.trueleafs = list(a["nodes_trueleafs"])
    ens.falsenodeids = list(a["nodes_falsenodeids"])
    ens.falseleafs = list(a["nodes_falseleafs"])
    ens.mvt = list(a.get("nodes_missing_value_tracks_true", [0] * len(ens.modes)))
    ens.leaf_weights = [float(v) for v in arr("leaf_weights")]
    ens.leaf_targetids = list(a["leaf_targetids"])
    assert arr("nodes_modes").dtype == np.uint8
    n = len(ens.modes)
    for k in ("featureids", "splits", "truenodeids", "trueleafs", "falsenodeids", "falseleafs", "mvt"):
        assert len(getattr(ens, k)) == n, k
    assert len(ens.leaf_targetids) == len(ens.leaf_weights)
    # membership sets: NaN-terminated, in nodes_* order
    mv = [float(v) for v in arr("membership_values")] if "membership_values" in a else []
    ens.sets = [None] * n
    pos = 0
    for i in range(n):
        if ens.modes[i] == MEMBER:
            vals = []
            while not math.isnan(mv[pos]):
                vals.append(mv[pos])
                pos += 1
            pos += 1
            assert vals, f"empty set at node {i}"
            ens.sets[i] = tuple(vals)
    assert pos == len(mv), "membership_values has values after the last set"
    # structure: disjoint trees, each node/leaf referenced once
    seen_nodes, seen_leaves = set(), set()
    for r in ens.tree_roots:
        stack = [r]
        while stack:
            i = stack.pop()
            assert i not in seen_nodes
            seen_nodes.add(i)
            for nid, is_leaf in ((ens.truenodeids[i], ens.trueleafs[i]), (ens.falsenodeids[i], ens.falseleafs[i])):
                if is_leaf:
                    assert nid not in seen_leaves
                    seen_leaves.add(nid)
                else:
                    stack.append(nid)
    assert seen_nodes == set(range(n)) and seen_leaves == set(range(len(ens.leaf_weights)))
    return ens


def go_true(ens: Ensemble, i: int, X: np.ndarray) -> np.ndarray:
    """Branch decision of split node i for every row of X (float32 values)."""
    x = X[:, ens.featureids[i]].astype(np.float32)
    t = np.float32(ens.splits[i])
    m = ens.modes[i]
    with np.errstate(invalid="ignore"):
        if m == LEQ:
            c = x <= t
        elif m == LT:
            c = x < t
        elif m == GTE:
            c = x >= t
        elif m == GT:
            c = x > t
        elif m == EQ:
            c = x == t
        elif m == NEQ:
            c = x != t            # NaN != t is True
        elif m == MEMBER:
            c = np.isin(x, np.asarray(ens.sets[i], dtype=np.float32))
        else:
            raise ValueError(m)
    return c | (np.isnan(x) & bool(ens.mvt[i]))


def tree_values(ens: Ensemble, go: dict[int, np.ndarray], in_s: list[bool], n_rows: int) -> list[np.ndarray]:
    """Per tree, the cover-weighted descent v_t(S) for every row (in_s all True: the prediction)."""

    def rec(idx: int, is_leaf: int) -> np.ndarray:
        if is_leaf:
            return np.full(n_rows, ens.leaf_weights[idx])
        vt = rec(ens.truenodeids[idx], ens.trueleafs[idx])
        vf = rec(ens.falsenodeids[idx], ens.falseleafs[idx])
        if in_s[ens.featureids[idx]]:
            return np.where(go[idx], vt, vf)
        ct = child_cover(ens, ens.truenodeids[idx], ens.trueleafs[idx])
        cf = child_cover(ens, ens.falsenodeids[idx], ens.falseleafs[idx])
        return (ct * vt + cf * vf) / ens.cover_node[idx]

    return [rec(r, 0) for r in ens.tree_roots]


def child_cover(ens: Ensemble, idx: int, is_leaf: int) -> float:
    return ens.cover_leaf[idx] if is_leaf else ens.cover_node[idx]


def predict(ens: Ensemble, X: np.ndarray) -> np.ndarray:
    go = {i: go_true(ens, i, X) for i in range(ens.n_nodes)}
    return np.sum(tree_values(ens, go, [True] * ens.n_features, len(X)), axis=0)


def shapley(v: np.ndarray, m: int) -> np.ndarray:
    """v[mask, row] -> phi[row, feature] by the Shapley formula."""
    w = [math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)]
    phi = np.zeros((v.shape[1], m))
    for i in range(m):
        for mask in range(2**m):
            if not mask >> i & 1:
                phi[:, i] += w[bin(mask).count("1")] * (v[mask | 1 << i] - v[mask])
    return phi


def path_shap(ens: Ensemble, X: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    m, n = ens.n_features, len(X)
    go = {i: go_true(ens, i, X) for i in range(ens.n_nodes)}
    v = np.zeros((2**m, n))
    for mask in range(2**m):
        v[mask] = np.sum(tree_values(ens, go, [bool(mask >> d & 1) for d in range(m)], n), axis=0)
    assert np.all(v[0] == v[0][0])
    return shapley(v, m), float(v[0][0]), v[-1]


def hybrids(X: np.ndarray, B: np.ndarray, mask: int) -> np.ndarray:
    """Rows x_S + b_~S for every (x, b) pair, x-major."""
    m = X.shape[1]
    in_s = np.array([bool(mask >> d & 1) for d in range(m)])
    h = np.where(in_s[None, None, :], X[:, None, :], B[None, :, :])
    return h.reshape(-1, m)


def interventional_shap(ens: Ensemble, X: np.ndarray, B: np.ndarray, sess, tol: float):
    """Exact interventional SHAP; every hybrid row also scored by onnxruntime (checked to `tol`)."""
    m, n, nb = ens.n_features, len(X), len(B)
    v = np.zeros((2**m, n))
    max_diff = 0.0
    for mask in range(2**m):
        h = hybrids(X, B, mask)
        own = predict(ens, h)
        ortv = run_margin(sess, h)
        diff = np.abs(ortv - own) / np.maximum(1.0, np.abs(own))
        max_diff = max(max_diff, float(diff.max()))
        assert max_diff <= tol, (mask, max_diff)
        v[mask] = own.reshape(n, nb).mean(axis=1)
    return shapley(v, m), float(predict(ens, B).mean()), v[-1], max_diff


# --------------------------------------------------------------------------
# onnxruntime
# --------------------------------------------------------------------------

def session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_margin(sess, X: np.ndarray) -> np.ndarray:
    (y,) = sess.run([MARGIN], {INPUT_NAME: X.astype(np.float32)})
    assert y.shape == (len(X), 1) and y.dtype == np.float32
    return y[:, 0].astype(np.float64)


def check_versions() -> dict:
    assert ort.__version__ == ORT_VERSION, f"onnxruntime {ort.__version__} != {ORT_VERSION}"
    assert onnx.__version__ == ONNX_VERSION, f"onnx {onnx.__version__} != {ONNX_VERSION}"
    return {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


def covers_rows(ens: Ensemble) -> list[list]:
    """covers.csv rows, per tree in depth-first pre-order (true branch first)."""
    rows = []
    for t, r in enumerate(ens.tree_roots):
        stack = [(r, 0)]
        while stack:
            idx, is_leaf = stack.pop()
            if is_leaf:
                rows.append([t, -(idx + 1), ens.cover_leaf[idx]])
            else:
                rows.append([t, idx, ens.cover_node[idx]])
                stack.append((ens.falsenodeids[idx], ens.falseleafs[idx]))
                stack.append((ens.truenodeids[idx], ens.trueleafs[idx]))
    return rows


def load_covers(path: Path, ens: Ensemble) -> None:
    """Fill ens.cover_node / cover_leaf from covers.csv and check consistency."""
    header, data = read_csv(path)
    assert header == ["tree_id", "node_id", "cover"]
    ens.cover_node = [math.nan] * ens.n_nodes
    ens.cover_leaf = [math.nan] * len(ens.leaf_weights)
    tree_of = {}
    for t, r in enumerate(ens.tree_roots):
        stack = [(r, 0)]
        while stack:
            idx, is_leaf = stack.pop()
            tree_of[(idx, is_leaf)] = t
            if not is_leaf:
                stack += [(ens.truenodeids[idx], ens.trueleafs[idx]), (ens.falsenodeids[idx], ens.falseleafs[idx])]
    for t, nid, c in data:
        t, nid = int(t), int(nid)
        key = (-nid - 1, 1) if nid < 0 else (nid, 0)
        assert tree_of[key] == t and c > 0
        (ens.cover_leaf if key[1] else ens.cover_node)[key[0]] = c
    assert len(data) == ens.n_nodes + len(ens.leaf_weights)
    for i in range(ens.n_nodes):
        s = child_cover(ens, ens.truenodeids[i], ens.trueleafs[i]) + child_cover(ens, ens.falsenodeids[i], ens.falseleafs[i])
        assert s == ens.cover_node[i], (i, s, ens.cover_node[i])


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def describe_nodes(ens: Ensemble) -> list[dict]:
    out = []
    tree_of = {}
    for t, r in enumerate(ens.tree_roots):
        stack = [r]
        while stack:
            i = stack.pop()
            tree_of[i] = t
            for nid, lf in ((ens.truenodeids[i], ens.trueleafs[i]), (ens.falsenodeids[i], ens.falseleafs[i])):
                if not lf:
                    stack.append(nid)
    for i in range(ens.n_nodes):
        d = {"i": i, "tree": tree_of[i], "feature": ens.featureids[i], "mode": MODE_NAMES[ens.modes[i]]}
        if ens.modes[i] == MEMBER:
            d["set"] = [int(v) for v in ens.sets[i]]
        else:
            d["split"] = ens.splits[i]
        d["missing_tracks_true"] = ens.mvt[i]
        d["true"] = f"leaf {ens.truenodeids[i]}" if ens.trueleafs[i] else f"node {ens.truenodeids[i]}"
        d["false"] = f"leaf {ens.falsenodeids[i]}" if ens.falseleafs[i] else f"node {ens.falsenodeids[i]}"
        out.append(d)
    return out


# --------------------------------------------------------------------------
# lgbm-nan-v5
# --------------------------------------------------------------------------

def v3_to_v5(path: Path) -> tuple[Ensemble, list[list[int]], list[list[int]], dict]:
    """Rewrite the TreeEnsembleClassifier of `path` as opset-5 arrays (pre-order, true first)."""
    m = onnx.load(str(path))
    (te,) = [n for n in m.graph.node if n.op_type == "TreeEnsembleClassifier"]
    a = {x.name: helper.get_attribute_value(x) for x in te.attribute}
    assert a["post_transform"] == b"LOGISTIC" and list(a["classlabels_int64s"]) == [0, 1]
    assert set(a["class_ids"]) == {0} and not a.get("base_values")
    tids, nids = a["nodes_treeids"], a["nodes_nodeids"]
    pos = {(t, n): k for k, (t, n) in enumerate(zip(tids, nids))}
    weight = {}
    for t, n, w in zip(a["class_treeids"], a["class_nodeids"], a["class_weights"]):
        assert (t, n) not in weight, "one weight per leaf expected"
        weight[(t, n)] = w
    n_features = m.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    ens = Ensemble(n_features=n_features)
    split_map, leaf_map = [], []   # new index -> [orig tree_id, orig node_id]
    trees = sorted(set(tids))
    assert trees == list(range(len(trees)))

    def visit(t: int, n: int) -> tuple[int, int]:
        k = pos[(t, n)]
        mode = a["nodes_modes"][k]
        if mode == b"LEAF":
            j = len(ens.leaf_weights)
            ens.leaf_weights.append(f32(weight[(t, n)]))
            ens.leaf_targetids.append(0)
            leaf_map.append([t, n])
            return j, 1
        assert mode == b"BRANCH_LEQ", mode
        i = ens.n_nodes
        ens.featureids.append(a["nodes_featureids"][k])
        ens.splits.append(f32(a["nodes_values"][k]))
        ens.modes.append(LEQ)
        ens.mvt.append(a["nodes_missing_value_tracks_true"][k])
        ens.sets.append(None)
        for lst in (ens.truenodeids, ens.trueleafs, ens.falsenodeids, ens.falseleafs):
            lst.append(-1)
        split_map.append([t, n])
        ens.truenodeids[i], ens.trueleafs[i] = visit(t, a["nodes_truenodeids"][k])
        ens.falsenodeids[i], ens.falseleafs[i] = visit(t, a["nodes_falsenodeids"][k])
        return i, 0

    for t in trees:
        root, is_leaf = visit(t, 0)
        assert not is_leaf, f"tree {t} is a single leaf"
        ens.tree_roots.append(root)
    assert ens.n_nodes + len(ens.leaf_weights) == len(tids)
    info = {"n_trees": len(trees), "n_split_nodes": ens.n_nodes, "n_leaves": len(ens.leaf_weights),
            "n_v3_nodes": len(tids)}
    return ens, split_map, leaf_map, info


def build_lgbm_nan_v5(out: Path, versions: dict) -> None:
    src_meta = json.loads((SRC_LGBM / "meta.json").read_text())
    ens, split_map, leaf_map, info = v3_to_v5(SRC_LGBM / "model.onnx")
    doc = ("tests/fixtures/attributions/lgbm-nan/model.onnx rewritten node for node as ai.onnx.ml "
           "TreeEnsemble (opset 5); output 'margin' = raw log-odds, 'probabilities' = [1-sigmoid, sigmoid].")
    model = make_model(ens, "lgbm_nan_v5", with_probabilities=True, doc=doc)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    model = onnx.load(str(out / "model.onnx"))
    parsed = parse_model(model, ens.n_features)
    for k in ("tree_roots", "featureids", "splits", "modes", "truenodeids", "trueleafs", "falsenodeids",
              "falseleafs", "mvt", "leaf_weights", "leaf_targetids"):
        assert getattr(parsed, k) == getattr(ens, k), k

    # covers re-keyed from the original (tree_id, node_id)
    _, old = read_csv(SRC_LGBM / "covers.csv")
    old_cover = {(int(t), int(n)): c for t, n, c in old}
    assert len(old_cover) == info["n_v3_nodes"]
    ens.cover_node = [old_cover[tuple(k)] for k in split_map]
    ens.cover_leaf = [old_cover[tuple(k)] for k in leaf_map]
    write_csv(out / "covers.csv", ["tree_id", "node_id", "cover"], covers_rows(ens))
    load_covers(out / "covers.csv", parsed)

    for name in ("X.csv", "background.csv", "native_margins.csv", "shap_path.csv", "shap_interventional.csv"):
        shutil.copyfile(SRC_LGBM / name, out / name)
    _, X = read_csv(out / "X.csv")
    _, B = read_csv(out / "background.csv")
    _, native = read_csv(out / "native_margins.csv")
    _, phi_path_gold = read_csv(out / "shap_path.csv")
    _, phi_int_gold = read_csv(out / "shap_interventional.csv")
    _, old_outputs = read_csv(SRC_LGBM / "onnx_outputs.csv")
    native = native[:, 0]

    sess = session(model)
    ort_margin = run_margin(sess, X)
    own = predict(parsed, X)
    probs = sess.run([PROBS], {INPUT_NAME: X.astype(np.float32)})[0]
    rel_native = float(np.max(np.abs(ort_margin - native) / np.abs(native)))
    ort_vs_own = rel_err(ort_margin, own)
    assert rel_native <= 1e-5, rel_native
    assert ort_vs_own <= 1e-6, ort_vs_own
    probs_vs_old = float(np.max(np.abs(probs - old_outputs)))
    assert probs_vs_old <= 1e-6, probs_vs_old
    # the original classifier with post_transform NONE: its raw score column must equal 'margin' bit for bit
    v3 = onnx.load(str(SRC_LGBM / "model.onnx"))
    (te,) = [n for n in v3.graph.node if n.op_type == "TreeEnsembleClassifier"]
    (pt,) = [x for x in te.attribute if x.name == "post_transform"]
    pt.s = b"NONE"
    v3_raw = session(v3).run([PROBS], {INPUT_NAME: X.astype(np.float32)})[0][:, 1].astype(np.float64)
    v3_raw_max_abs = float(np.max(np.abs(v3_raw - ort_margin)))
    assert v3_raw_max_abs <= 1e-6, v3_raw_max_abs
    bg_ort_vs_own = rel_err(run_margin(sess, B), predict(parsed, B))
    assert bg_ort_vs_own <= 1e-6
    write_csv(out / "onnx_outputs.csv", ["out0"], [[float(v)] for v in ort_margin])

    # brute-force SHAP on the opset-5 trees + covers.csv must give the copied goldens
    phi_path, e_path, full = path_shap(parsed, X)
    assert np.array_equal(full, own)
    phi_int, e_int, _, hyb_diff = interventional_shap(parsed, X, B, sess, tol=1e-6)
    path_diff = float(np.max(np.abs(phi_path - phi_path_gold)))
    int_diff = float(np.max(np.abs(phi_int - phi_int_gold)))
    assert path_diff <= 1e-6 and int_diff <= 1e-6, (path_diff, int_diff)
    e_path_gold, e_int_gold = src_meta["expected_path"][0], src_meta["expected_interventional"][0]
    assert abs(e_path - e_path_gold) <= 1e-6 and abs(e_int - e_int_gold) <= 1e-6
    add_path = float(np.max(np.abs(e_path + phi_path.sum(1) - own)))
    add_int = float(np.max(np.abs(e_int + phi_int.sum(1) - own)))
    assert add_path <= 1e-9 and add_int <= 1e-9

    meta = {
        "model": str((out / "model.onnx").relative_to(REPO)) if out.is_relative_to(REPO) else str(out / "model.onnx"),
        "n_features": ens.n_features,
        "n_outputs": 1,
        "expected_path": src_meta["expected_path"],
        "expected_interventional": src_meta["expected_interventional"],
        "margin_output": MARGIN,
        "margin_space": "log_odds",
        "probabilities_output": PROBS,
        "onnx_outputs_file": "onnx_outputs.csv (onnxruntime 'margin' output for X.csv)",
        "native_margins_file": "native_margins.csv",
        "source_fixture": "tests/fixtures/attributions/lgbm-nan",
        "n_trees": info["n_trees"],
        "n_split_nodes": info["n_split_nodes"],
        "n_leaves": info["n_leaves"],
        "rows": int(len(X)),
        "background_rows": int(len(B)),
        "layout": ("One TreeEnsemble node (n_targets 1, SUM, post_transform NONE) whose output is 'margin'; "
                   "Sigmoid/Sub/Concat build 'probabilities'.  Trees in the original nodes_treeids order "
                   "(tree_roots[t] = original tree t); nodes and leaves numbered in depth-first pre-order, true "
                   "branch first; all splits BRANCH_LEQ with the original float32 thresholds and "
                   "missing_value_tracks_true; leaf_weights = the original float32 class_weights; no "
                   "membership_values, no nodes_hitrates."),
        "covers_node_identity": COVERS_NOTE,
        "v3_node_map": {
            "what": "original (nodes_treeids, nodes_nodeids) of each opset-5 split node i (splits[i]) and leaf j (leaves[j])",
            "splits": split_map,
            "leaves": leaf_map,
        },
        "checks": {
            "onnx_checker_full": True,
            "ort_margin_vs_native_max_rel": rel_native,
            "ort_margin_vs_python_traversal_max_rel": ort_vs_own,
            "ort_background_margin_vs_python_traversal_max_rel": bg_ort_vs_own,
            "ort_probabilities_vs_original_onnx_outputs_max_abs": probs_vs_old,
            "ort_margin_vs_original_model_post_transform_none_column1_max_abs": v3_raw_max_abs,
            "ort_vs_python_on_interventional_hybrid_rows_max_rel": hyb_diff,
            "bruteforce_path_vs_shap_path_csv_max_abs": path_diff,
            "bruteforce_interventional_vs_shap_interventional_csv_max_abs": int_diff,
            "bruteforce_expected_path": e_path,
            "bruteforce_expected_interventional": e_int,
        },
        "notes": (
            "Same trees, rows and SHAP goldens as tests/fixtures/attributions/lgbm-nan (files copied byte for "
            "byte; expected values from its meta.json), model re-encoded as ai.onnx.ml opset-5 TreeEnsemble.  "
            + COVERS_NOTE + "  " + RULE_NOTE + "  The goldens come from shap on the native LightGBM model "
            "(float64 leaf values); an exact enumeration over all 256 feature subsets on this model's float32 "
            "trees and covers.csv reproduces them to the checks.* differences.  Splits on f4..f7 had "
            "LightGBM missing_type None; X and background have no NaN there."
        ),
        "versions": versions,
        "seed": None,
    }
    write_json(out / "meta.json", meta)
    print(f"lgbm-nan-v5: {info}, margin vs native rel {rel_native:.2e}, path {path_diff:.2e}, "
          f"interventional {int_diff:.2e}")


# --------------------------------------------------------------------------
# member-v5
# --------------------------------------------------------------------------

def L(w: float, cover: int):
    return ("leaf", w, cover)


def S(feature: int, mode: int, value, mvt: int, t, f):
    return ("split", feature, mode, value, mvt, t, f)


# f0, f2 continuous; f1 category code 0..9 (plus out-of-range 37, 40); f3 category code 0..5.
MEMBER_TREES = [
    # tree 0
    S(1, MEMBER, (1, 3, 4), 1,
      S(0, LEQ, 0.5, 0,
        L(0.25, 40),
        S(2, GT, -0.75, 1, L(-0.125, 25), L(0.5, 15))),
      S(2, LT, 1.0, 0,
        S(3, EQ, 2.0, 0, L(-0.375, 12), L(0.0625, 48)),
        L(0.75, 20))),
    # tree 1
    S(0, GTE, -0.25, 1,
      S(3, MEMBER, (0, 2, 5), 0,
        L(0.3125, 30),
        S(1, NEQ, 7.0, 0, L(-0.1875, 35), L(0.625, 10))),
      S(1, MEMBER, (2, 8), 1,
        L(-0.5, 22),
        S(2, LEQ, 0.0, 1, L(0.1875, 28), L(-0.25, 35)))),
    # tree 2 (breadth-first order puts MEMBER {0,3} before the deeper MEMBER {0,5,6,9})
    S(2, LT, 0.25, 0,
      S(3, MEMBER, (1, 4), 1,
        S(0, GT, 1.5, 0,
          L(0.875, 8),
          S(1, MEMBER, (0, 5, 6, 9), 0, L(-0.0625, 20), L(0.1875, 30))),
        L(-0.3125, 50)),
      S(3, MEMBER, (0, 3), 0,
        L(0.4375, 15),
        S(1, EQ, 3.0, 1, L(-0.125, 25), L(0.0625, 32)))),
    # tree 3 (f0 and f1 repeated along paths)
    S(0, LEQ, 1.0, 0,
      S(1, MEMBER, (1, 2, 3), 0,
        S(0, LEQ, -0.5, 1, L(-0.4375, 18), L(0.25, 27)),
        S(3, NEQ, 1.0, 1, L(0.125, 40), L(-0.1875, 10))),
      S(3, MEMBER, (3, 4, 5), 1,
        L(0.5625, 14),
        S(1, MEMBER, (1, 7), 0, L(-0.625, 6), L(0.3125, 20)))),
    # tree 4 ({4, 9, 40} is an onnxruntime "big set": a value > 30)
    S(1, MEMBER, (4, 9, 40), 0,
      S(2, GT, 0.5, 1, L(0.375, 16), L(-0.0625, 24)),
      S(3, LEQ, 2.0, 0,
        S(0, LT, 0.0, 1, L(-0.25, 30), L(0.125, 34)),
        L(0.4375, 26))),
]
F0_THRESHOLDS = [0.5, -0.25, 1.5, 1.0, -0.5, 0.0]
F2_THRESHOLDS = [-0.75, 1.0, 0.0, 0.25, 0.5]


def build_breadth_first(trees) -> Ensemble:
    ens = Ensemble(n_features=4)
    for tree in trees:
        # breadth-first: assign indices level by level, nodes and leaves separately
        order, queue = [], [tree]
        while queue:
            nxt = []
            for nd in queue:
                order.append(nd)
                if nd[0] == "split":
                    nxt += [nd[5], nd[6]]
            queue = nxt
        splits = [nd for nd in order if nd[0] == "split"]
        leaves = [nd for nd in order if nd[0] == "leaf"]
        index = {id(nd): (ens.n_nodes + k, 0) for k, nd in enumerate(splits)}
        index.update({id(nd): (len(ens.leaf_weights) + k, 1) for k, nd in enumerate(leaves)})
        ens.tree_roots.append(ens.n_nodes)
        for nd in splits:
            _, feat, mode, value, mvt, t, f = nd
            ens.featureids.append(feat)
            ens.modes.append(mode)
            ens.splits.append(math.nan if mode == MEMBER else f32(value))
            ens.sets.append(tuple(float(v) for v in value) if mode == MEMBER else None)
            ens.mvt.append(mvt)
            ens.truenodeids.append(index[id(t)][0])
            ens.trueleafs.append(index[id(t)][1])
            ens.falsenodeids.append(index[id(f)][0])
            ens.falseleafs.append(index[id(f)][1])
            ens.cover_node.append(math.nan)
        for nd in leaves:
            assert f32(nd[1]) == nd[1] and nd[1] * 16 == int(nd[1] * 16)
            ens.leaf_weights.append(nd[1])
            ens.leaf_targetids.append(0)
            ens.cover_leaf.append(float(nd[2]))
    # covers: parent = sum of children (children have higher indices within a tree)
    for i in reversed(range(ens.n_nodes)):
        ens.cover_node[i] = (child_cover(ens, ens.truenodeids[i], ens.trueleafs[i])
                             + child_cover(ens, ens.falsenodeids[i], ens.falseleafs[i]))
    return ens


def make_rows(rng: np.random.Generator, n: int, n_exact: int) -> np.ndarray:
    """n rows: f0, f2 ~ N(0, 1.2) float32 (n_exact of them set to a threshold), f1 codes 0..9, f3 codes 0..5."""
    X = np.empty((n, 4))
    X[:, 0] = rng.normal(0.0, 1.2, n).astype(np.float32)
    X[:, 2] = rng.normal(0.0, 1.2, n).astype(np.float32)
    X[:, 1] = rng.integers(0, 10, n)
    X[:, 3] = rng.integers(0, 6, n)
    for col, thr in ((0, F0_THRESHOLDS), (2, F2_THRESHOLDS)):
        rows = rng.choice(n, n_exact, replace=False)
        X[rows, col] = rng.choice(thr, n_exact)
    for col in range(4):
        X[rng.random(n) < 0.15, col] = np.nan
    return X


def member_rows(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    X = make_rows(rng, 40, 8)
    X[rng.choice(40, 2, replace=False), 1] = [40.0, 37.0]   # out-of-range codes, 40 in tree 4's set
    B = make_rows(rng, 30, 4)
    return X, B


def onnx_reference_disagreements(model: onnx.ModelProto, X: np.ndarray, ort_margin: np.ndarray) -> int | str:
    try:
        from onnx.reference import ReferenceEvaluator
        (y,) = ReferenceEvaluator(model).run([MARGIN], {INPUT_NAME: X.astype(np.float32)})
        return int(np.sum(np.abs(y[:, 0].astype(np.float64) - ort_margin) > 1e-6))
    except Exception as e:  # noqa: BLE001
        return f"error: {type(e).__name__}: {e}"


def build_member_v5(out: Path, versions: dict) -> None:
    rng = np.random.default_rng(SEED)
    ens = build_breadth_first(MEMBER_TREES)
    assert len(ens.tree_roots) == 5
    assert set(ens.modes) == set(range(7))
    assert any(ens.mvt) and not all(ens.mvt)
    doc = "Hand-built ai.onnx.ml opset-5 TreeEnsemble with BRANCH_MEMBER splits (Candor test fixture)."
    model = make_model(ens, "member_v5", with_probabilities=False, doc=doc)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out / "model.onnx"))
    model = onnx.load(str(out / "model.onnx"))
    parsed = parse_model(model, 4)
    for k in ("tree_roots", "featureids", "modes", "truenodeids", "trueleafs", "falsenodeids", "falseleafs",
              "mvt", "leaf_weights", "leaf_targetids", "sets"):
        assert getattr(parsed, k) == getattr(ens, k), k
    assert all((a == b) or (math.isnan(a) and math.isnan(b)) for a, b in zip(parsed.splits, ens.splits))
    # the MEMBER nodes are not in depth-first order in nodes_* (a DFS decoder would mismatch sets)
    dfs = []
    for r in ens.tree_roots:
        st = [r]
        while st:
            i = st.pop()
            dfs.append(i)
            st += [x for x, lf in ((ens.falsenodeids[i], ens.falseleafs[i]), (ens.truenodeids[i], ens.trueleafs[i])) if not lf]
    members_idx = [i for i in range(ens.n_nodes) if ens.modes[i] == MEMBER]
    assert [i for i in dfs if ens.modes[i] == MEMBER] != members_idx

    write_csv(out / "covers.csv", ["tree_id", "node_id", "cover"], covers_rows(ens))
    load_covers(out / "covers.csv", parsed)

    X, B = member_rows(rng)
    # every split node sees both outcomes among X, and NaN occurs in every feature of X and B
    for i in range(ens.n_nodes):
        g = go_true(parsed, i, X)
        assert g.any() and not g.all(), i
    assert np.isnan(X).any(axis=0).all() and np.isnan(B).any(axis=0).all()
    header = [f"f{d}" for d in range(4)]
    write_csv(out / "X.csv", header, X)
    write_csv(out / "background.csv", header, B)
    _, X = read_csv(out / "X.csv")
    _, B = read_csv(out / "background.csv")

    sess = session(model)
    ort_margin = run_margin(sess, X)
    own = predict(parsed, X)
    assert np.array_equal(ort_margin, own), np.max(np.abs(ort_margin - own))
    assert np.array_equal(run_margin(sess, B), predict(parsed, B))
    write_csv(out / "onnx_outputs.csv", ["out0"], [[float(v)] for v in ort_margin])
    write_csv(out / "native_margins.csv", ["margin0"], [[float(v)] for v in own])

    phi_path, e_path, full = path_shap(parsed, X)
    assert np.array_equal(full, own)
    phi_int, e_int, _, hyb_diff = interventional_shap(parsed, X, B, sess, tol=0.0)
    add_path = float(np.max(np.abs(e_path + phi_path.sum(1) - own)))
    add_int = float(np.max(np.abs(e_int + phi_int.sum(1) - own)))
    assert add_path <= 1e-9 and add_int <= 1e-9, (add_path, add_int)
    write_csv(out / "shap_path.csv", header, phi_path)
    write_csv(out / "shap_interventional.csv", header, phi_int)

    # leaves reached: X alone must reach every leaf
    reached_by = []
    for Z in (X, B):
        reached = set()
        go = {i: go_true(parsed, i, Z) for i in range(parsed.n_nodes)}
        for r in parsed.tree_roots:
            for row in range(len(Z)):
                i, lf = r, 0
                while not lf:
                    i, lf = ((parsed.truenodeids[i], parsed.trueleafs[i]) if go[i][row]
                             else (parsed.falsenodeids[i], parsed.falseleafs[i]))
                reached.add(i)
        reached_by.append(len(reached))
    assert reached_by[0] == len(ens.leaf_weights), reached_by

    meta = {
        "model": str((out / "model.onnx").relative_to(REPO)) if out.is_relative_to(REPO) else str(out / "model.onnx"),
        "n_features": 4,
        "n_outputs": 1,
        "expected_path": [e_path],
        "expected_interventional": [e_int],
        "margin_output": MARGIN,
        "margin_space": "raw",
        "onnx_outputs_file": "onnx_outputs.csv (onnxruntime 'margin' output for X.csv)",
        "native_margins_file": "native_margins.csv (Python traversal of the opset-5 attributes)",
        "features": {"f0": "continuous", "f1": "integer category code (0..9; X also has 37 and 40)",
                     "f2": "continuous", "f3": "integer category code (0..5)"},
        "n_trees": len(ens.tree_roots),
        "n_split_nodes": ens.n_nodes,
        "n_leaves": len(ens.leaf_weights),
        "rows": int(len(X)),
        "background_rows": int(len(B)),
        "rows_with_nan": int(np.isnan(X).any(axis=1).sum()),
        "background_rows_with_nan": int(np.isnan(B).any(axis=1).sum()),
        "layout": ("One TreeEnsemble node (n_targets 1, SUM, post_transform NONE, no base values: opset 5 has "
                   "none) whose output is 'margin'.  Trees are contiguous; within a tree split nodes and leaves "
                   "are numbered breadth-first (separately), so tree_roots = first node of each tree and the "
                   "MEMBER nodes' nodes_* order differs from depth-first order (tree 2).  " + MEMBERSHIP_NOTE),
        "membership_values_nan_as_null": [None if math.isnan(v) else v for v in ens.membership_values()],
        "nodes": describe_nodes(ens),
        "covers_node_identity": COVERS_NOTE,
        "shap_definition": (
            "Exact brute force over all 16 feature subsets S, Shapley weights |S|!(M-|S|-1)!/M!.  "
            "shap_path: v(S) = sum over trees of the cover-weighted descent (feature in S: follow the row; "
            "else (cover(true)*v_true + cover(false)*v_false)/cover(node)), expected_path = v({}).  "
            "shap_interventional: v(S) = mean over background.csv rows b of margin(x_S, b_~S), "
            "expected_interventional = mean margin(background)."),
        "checks": {
            "onnx_checker_full": True,
            "ort_margin_equals_python_traversal": "exact (X, background and all interventional hybrid rows)",
            "ort_vs_python_on_interventional_hybrid_rows_max_abs": hyb_diff,
            "additivity_path_max_abs": add_path,
            "additivity_interventional_max_abs": add_int,
            "every_split_node_both_outcomes_in_X": True,
            "leaves_reached": {"X": reached_by[0], "background": reached_by[1], "of": len(ens.leaf_weights)},
            "onnx_reference_evaluator_rows_wrong": onnx_reference_disagreements(model, X, ort_margin),
        },
        "notes": (
            "Hand-built opset-5 TreeEnsemble: 5 trees, depth <= 4, every tree has BRANCH_MEMBER splits "
            "(sets of integer category codes), all 7 modes occur, some nodes have "
            "missing_value_tracks_true = 1, f0 and f1 repeat along paths in tree 3.  Leaf weights are "
            "multiples of 1/16 (exact in float32), covers are invented integers with parent = sum of "
            "children.  X: 40 rows, background: 30 rows (seeded), NaN in every feature, f0/f2 partly set "
            "exactly to split thresholds, f1/f3 integer codes in and out of the sets.  "
            + COVERS_NOTE + "  " + RULE_NOTE + "  onnxruntime 1.31.1 truncates x to an integer before looking it "
            "up in a 'big' MEMBER set (a value < 0 or > 30, or >= 31 values; here {4, 9, 40}), so a non-integer "
            "x would be routed differently from the spec there; X and background hold only integer codes in "
            "f1/f3.  The onnx.reference evaluator mis-decodes sets containing 0 and orders sets depth-first; "
            "checks.onnx_reference_evaluator_rows_wrong counts the rows it gets wrong."
        ),
        "versions": versions,
        "seed": SEED,
    }
    write_json(out / "meta.json", meta)
    print(f"member-v5: {ens.n_nodes} split nodes, {len(ens.leaf_weights)} leaves, expected_path {e_path:.6f}, "
          f"expected_interventional {e_int:.6f}, additivity {add_path:.1e}/{add_int:.1e}, "
          f"leaves reached X {reached_by[0]} / background {reached_by[1]} of {len(ens.leaf_weights)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT_DEFAULT)
    args = ap.parse_args()
    out = args.out.resolve()
    versions = check_versions()
    build_lgbm_nan_v5(out / "lgbm-nan-v5", versions)
    build_member_v5(out / "member-v5", versions)


if __name__ == "__main__":
    main()
