"""Node covers of tree ensembles for path-dependent TreeSHAP, keyed by ONNX ids.

Shared by ``train_caravan.py`` (which writes the ``covers.csv`` sidecar of every
LightGBM package it builds) and ``attribution_goldens.py`` (which writes the
``covers.csv`` of its test fixtures); both use this one implementation.

The ONNX ``TreeEnsemble*`` node is parsed tree by tree (``OnnxEnsemble``) and
walked in parallel with the native model's trees (``map_onnx_to_native``):
every ONNX node maps to exactly one native node, and split feature, mode,
float32 threshold, NaN direction and leaf weight are asserted to agree.  Each
ONNX ``(tree_id, node_id)`` then takes the native node's cover
(``covers_from_mapping``), which must equal the sum of its children's.

``covers.csv`` (``write_covers``) is ``tree_id,node_id,cover``, one line per
ONNX node (leaves included), sorted by tree id and node id; the Rust gateway
reads it as ``COVERS_FILE`` in ``src/models/package.rs``.

Only numpy, onnx and lightgbm are imported, so ``train_caravan.py`` needs none
of the golden-only packages (shap, xgboost).
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
from onnx import numpy_helper

COVERS_HEADER = "tree_id,node_id,cover"

# How ONNX ids relate to LightGBM's nodes (written into the fixtures' meta.json).
LGBM_COVERS_MAPPING = (
    "onnxmltools numbers each tree's nodes itself (root 0; a split node reserves "
    "the two smallest free ids for its children, then recurses left first), so "
    "ids are neither LightGBM's split_index nor leaf_index.  Mapping: walk each "
    "ONNX tree (nodes_treeids t == LightGBM tree t) from its root in parallel with "
    "booster.dump_model()['tree_info'][t]['tree_structure'], ONNX true branch = "
    "left_child, false = right_child; asserted per node: split_feature, "
    "float32(threshold), BRANCH_LEQ, missing_value_tracks_true == NaN-goes-left, "
    "leaf weight == float32(leaf_value).  cover = internal_count (splits) / "
    "leaf_count (leaves).")


def fmt(v) -> str:
    """Exact, shortest text for a float: '' for NaN, integers without '.0'."""
    v = float(v)
    if np.isnan(v):
        return ""
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


# --------------------------------------------------------------------------
# ONNX tree ensembles
# --------------------------------------------------------------------------

def tree_node(model: onnx.ModelProto) -> onnx.NodeProto:
    nodes = [n for n in model.graph.node
             if n.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor")]
    assert len(nodes) == 1, [n.op_type for n in model.graph.node]
    return nodes[0]


class OnnxEnsemble:
    """The TreeEnsemble* node of a model, tree by tree, with ORT's branch rules."""

    def __init__(self, model: onnx.ModelProto):
        node = tree_node(model)
        self.op_type = node.op_type
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        self.post_transform = a.get("post_transform", b"NONE").decode()
        if "nodes_values" in a:
            values = [float(v) for v in a["nodes_values"]]
        else:
            values = [float(v) for v in numpy_helper.to_array(a["nodes_values_as_tensor"])]
        self.base_values = [float(v) for v in a.get("base_values", [])]
        if "base_values_as_tensor" in a:
            self.base_values = [float(v) for v in numpy_helper.to_array(a["base_values_as_tensor"])]
        self.trees: dict[int, dict[int, dict]] = {}
        self.order: list[tuple[int, int]] = []
        tracks = a.get("nodes_missing_value_tracks_true", [0] * len(a["nodes_treeids"]))
        for i, (t, n) in enumerate(zip(a["nodes_treeids"], a["nodes_nodeids"])):
            mode = a["nodes_modes"][i].decode()
            tree = self.trees.setdefault(int(t), {})
            assert int(n) not in tree, f"duplicate node {t}/{n}"
            tree[int(n)] = {
                "leaf": mode == "LEAF",
                "mode": mode,
                "feature": int(a["nodes_featureids"][i]),
                "threshold": values[i],
                "true": int(a["nodes_truenodeids"][i]),
                "false": int(a["nodes_falsenodeids"][i]),
                "tracks_true": int(tracks[i]),
                "w": {},
            }
            self.order.append((int(t), int(n)))
        prefix = "class" if self.op_type == "TreeEnsembleClassifier" else "target"
        if prefix == "class":
            self.class_labels = list(a.get("classlabels_int64s", [])) or list(a.get("classlabels_strings", []))
        else:
            self.class_labels = []
        weights = a[f"{prefix}_weights"] if f"{prefix}_weights" in a else \
            numpy_helper.to_array(a[f"{prefix}_weights_as_tensor"]).tolist()
        self.all_weights = [float(w) for w in weights]
        self.class_ids = sorted({int(c) for c in a[f"{prefix}_ids"]})
        for t, n, c, w in zip(a[f"{prefix}_treeids"], a[f"{prefix}_nodeids"], a[f"{prefix}_ids"], weights):
            nd = self.trees[int(t)][int(n)]
            assert nd["leaf"], f"weight on split node {t}/{n}"
            nd["w"][int(c)] = nd["w"].get(int(c), 0.0) + float(w)
        self.roots = {}
        for t, tree in self.trees.items():
            children = {c for nd in tree.values() if not nd["leaf"] for c in (nd["true"], nd["false"])}
            roots = set(tree) - children
            assert len(roots) == 1, (t, roots)
            self.roots[t] = roots.pop()

    # ORT (tree_ensemble_common.h): for float input thresholds are float32;
    # a NaN goes to the true branch iff missing_value_tracks_true, else to
    # the false branch (every comparison with NaN is false).
    @staticmethod
    def goes_true(nd: dict, x: float) -> bool:
        if np.isnan(x):
            return bool(nd["tracks_true"])
        t, mode = nd["threshold"], nd["mode"]
        if mode == "BRANCH_LEQ":
            return x <= t
        if mode == "BRANCH_LT":
            return x < t
        if mode == "BRANCH_GTE":
            return x >= t
        if mode == "BRANCH_GT":
            return x > t
        if mode == "BRANCH_EQ":
            return x == t
        if mode == "BRANCH_NEQ":
            return x != t
        raise ValueError(mode)

    def leaf(self, tree_id: int, x: np.ndarray) -> int:
        tree = self.trees[tree_id]
        n = self.roots[tree_id]
        while not tree[n]["leaf"]:
            nd = tree[n]
            n = nd["true"] if self.goes_true(nd, float(x[nd["feature"]])) else nd["false"]
        return n

    def ort_quirk_binary_all_positive(self) -> bool:
        """ORT's binary special case: one class id, two labels, every weight >= 0.

        onnxruntime (tree_ensemble_aggregator.h, _set_score_binary) then decides
        the LABEL on the raw score (s > 0.5 instead of s > 0) and writes the
        probabilities as [1 - T(s), T(s)]; with post_transform LOGISTIC, T is
        still the sigmoid in ORT 1.31.1 (see
        attribution_goldens.probe_ort_binary_all_positive)."""
        return (self.op_type == "TreeEnsembleClassifier" and len(self.class_labels) == 2
                and len(self.class_ids) == 1 and all(w >= 0 for w in self.all_weights))


# --------------------------------------------------------------------------
# Native trees, in one shape: {key: {leaf, feature, threshold, left, right,
# nan_left, cover, value}}; "left" is where x <= thr (LightGBM, sklearn) or
# x < thr (XGBoost) goes, i.e. the ONNX true branch.  The XGBoost and sklearn
# readers live in attribution_goldens.py (they need packages train_caravan.py
# does not install).
# --------------------------------------------------------------------------

def lgbm_native_trees(booster: lgb.Booster) -> list[dict]:
    dump = booster.dump_model()
    out = []
    for info in dump["tree_info"]:
        nodes: dict = {}

        def visit(nd) -> str:
            if "leaf_index" in nd or "split_index" not in nd:
                key = f"L{nd.get('leaf_index', 0)}"
                # A one-leaf tree has no leaf_count; LightGBM then covers 0 rows.
                nodes[key] = {"leaf": True, "value": float(nd["leaf_value"]),
                              "cover": float(nd.get("leaf_count", 0))}
                return key
            key = f"S{nd['split_index']}"
            assert nd["decision_type"] == "<=", nd["decision_type"]
            left, right = visit(nd["left_child"]), visit(nd["right_child"])
            thr = float(nd["threshold"])
            if nd["missing_type"] == "NaN":
                nan_left = bool(nd["default_left"])
            elif nd["missing_type"] == "None":
                nan_left = 0.0 <= thr  # LightGBM maps NaN to 0.0 for such splits
            else:
                raise AssertionError(f"missing_type {nd['missing_type']} not covered")
            nodes[key] = {"leaf": False, "feature": int(nd["split_feature"]), "threshold": thr,
                          "mode": "BRANCH_LEQ", "left": left, "right": right,
                          "nan_left": nan_left, "missing_type": nd["missing_type"],
                          "default_left": bool(nd["default_left"]),
                          "shap_threshold": thr, "shap_nan_left": bool(nd["default_left"]),
                          "cover": float(nd["internal_count"])}
            return key

        root = visit(info["tree_structure"])
        out.append({"root": root, "nodes": nodes})
    return out


# --------------------------------------------------------------------------
# ONNX -> native mapping and covers
# --------------------------------------------------------------------------

def map_onnx_to_native(ens: OnnxEnsemble, native: list[dict], leaf_class: list[int],
                       leaf_scale: float = 1.0) -> dict:
    """Walk every ONNX tree alongside native tree tree_id (true = native left).

    Returns {(tree_id, node_id): native key}.  leaf_class[tree_id] is the ONNX
    class/target id the tree's leaves write to."""
    assert sorted(ens.trees) == list(range(len(native))), "ONNX tree ids != native tree order"
    mapping = {}
    stats = {"splits": 0, "leaves": 0, "tracks_true": 0, "nan_checked": 0}
    for t, tree in ens.trees.items():
        nat = native[t]
        stack = [(ens.roots[t], nat["root"])]
        seen = set()
        while stack:
            o, n = stack.pop()
            assert (t, o) not in mapping, f"tree {t}: ONNX node {o} reached twice"
            assert n not in seen
            seen.add(n)
            mapping[(t, o)] = n
            on, nn = tree[o], nat["nodes"][n]
            assert on["leaf"] == nn["leaf"], (t, o, n)
            if on["leaf"]:
                stats["leaves"] += 1
                assert set(on["w"]) == {leaf_class[t]}, (t, o, on["w"])
                want = np.float32(nn["value"] * leaf_scale)
                got = on["w"][leaf_class[t]]
                assert abs(got - want) <= 2e-7 * max(1.0, abs(float(want))), (t, o, got, want)
                continue
            stats["splits"] += 1
            assert on["mode"] == nn["mode"], (t, o, on["mode"], nn["mode"])
            assert on["feature"] == nn["feature"], (t, o)
            with np.errstate(over="ignore"):  # LightGBM's NaN-vs-rest splits use DBL_MAX
                want_thr = np.float32(nn["threshold"])
            if nn.get("round_down") and float(want_thr) > nn["threshold"]:
                # skl2onnx: largest float32 <= the double threshold, so that
                # float32 x <= it exactly when x <= the double threshold.
                want_thr = np.nextafter(want_thr, np.float32(-np.inf))
                stats["rounded_down"] = stats.get("rounded_down", 0) + 1
            assert on["threshold"] == float(want_thr), (t, o, on["threshold"], nn["threshold"])
            if np.isinf(on["threshold"]):
                stats["inf_threshold"] = stats.get("inf_threshold", 0) + 1
            stats["tracks_true"] += on["tracks_true"]
            if nn["nan_left"] is not None:
                stats["nan_checked"] += 1
                assert bool(on["tracks_true"]) == nn["nan_left"], (t, o, nn)
            stack.append((on["true"], nn["left"]))
            stack.append((on["false"], nn["right"]))
        assert len(seen) == len(tree) == len(nat["nodes"]), (t, len(seen), len(tree), len(nat["nodes"]))
    return mapping, stats


def covers_from_mapping(ens: OnnxEnsemble, native: list[dict], mapping: dict,
                        rel_tol: float) -> dict:
    covers = {(t, o): native[t]["nodes"][n]["cover"] for (t, o), n in mapping.items()}
    worst = 0.0
    for t, tree in ens.trees.items():
        for o, nd in tree.items():
            if nd["leaf"]:
                continue
            p = covers[(t, o)]
            s = covers[(t, nd["true"])] + covers[(t, nd["false"])]
            err = abs(p - s) / max(1.0, abs(p))
            worst = max(worst, err)
            assert err <= rel_tol, f"tree {t} node {o}: cover {p} != {s}"
    return covers, worst


def write_covers(path: Path, covers: dict) -> None:
    """``tree_id,node_id,cover``, sorted by (tree_id, node_id), covers via fmt."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write(COVERS_HEADER + "\n")
        for (t, o) in sorted(covers):
            fh.write(f"{t},{o},{fmt(covers[(t, o)])}\n")


def lgbm_covers(booster: lgb.Booster, model: onnx.ModelProto, n_classes: int = 1) -> dict:
    """The native LightGBM booster's node covers keyed by ``model``'s ONNX ids.

    ``model`` must be the onnxmltools export of ``booster`` (tree t of class
    t % n_classes); the parallel walk asserts that it is, and that every
    parent's cover is exactly the sum of its children's."""
    native = lgbm_native_trees(booster)
    ens = OnnxEnsemble(model)
    mapping, _ = map_onnx_to_native(ens, native, [t % n_classes for t in range(len(native))])
    covers, _ = covers_from_mapping(ens, native, mapping, 0.0)
    return covers
