"""Train the Caravan targeting models and write Candor model packages.

Reproducible, pinned training of the bundled models on the Caravan data set
(CoIL 2000 Challenge: 5,822 customers, 85 features, target ``Purchase``).
For each model it writes ``<out>/<name>/<version>/`` containing

* ``model.onnx``    - the model, input ``input`` float32 [N, 78],
                      output ``probabilities`` float32 [N, 2] (column 1 =
                      P(purchase)) plus ``label`` int64 [N]; no ZipMap
* ``manifest.toml`` - metadata read by the Rust gateway (see models/README.md)
* ``background.csv``- 256 training rows (explanation background sample)
* ``golden.csv``    - 300 hold-out rows plus the ``score`` computed by
                      onnxruntime 1.31.1 on ``model.onnx``
* ``covers.csv``    - LightGBM packages only: the native booster's node
                      covers (``internal_count`` / ``leaf_count`` of
                      ``dump_model()``) keyed by the ONNX ``tree_id,node_id``,
                      for path-dependent TreeSHAP (see tree_covers.py)

Run from the repository root::

    python -m venv .venv-models \
      && .venv-models/bin/pip install -r models/requirements.txt \
      && .venv-models/bin/pip install --no-deps ISLP==0.6.0 \
      && .venv-models/bin/python models/train_caravan.py

ISLP is installed with ``--no-deps`` on purpose: only its bundled
``ISLP/data/Caravan.csv`` is needed, and its dependencies (torch, ...) are
not.  The script never imports ISLP; it locates the CSV from the installed
package and checks its SHA-256.

Which columns are used: every model takes the 78 remaining feature columns
in the original column order.  Seven columns are excluded: the four
zip-code religion shares (MGODRK, MGODPR, MGODOV, MGODGE) and the customer
subtype / main type segments (MOSTYPE, MOSHOOFD), whose segment labels name
religion and ethnicity, are proxies for GDPR Art. 9 special categories;
MGEMLEEF (average age) is a protected attribute reserved for fairness
audits.  None of them is a model input, and explanation groups whose
members are all excluded (``customer_type``) are left out of the manifests.

Determinism: fixed seeds everywhere, single-threaded LightGBM
(``deterministic=True``, ``force_row_wise=True``, ``num_threads=1``),
single-threaded BLAS and onnxruntime, explicit graph names (the converters
default to random UUIDs) and a fixed training date.  Re-running on the same
machine reproduces every file byte for byte.

Options: ``--out DIR`` (default: the folder of this script, i.e. models/).

Test fixture: ``--fixture religion-proxy`` writes only the package
``caravan-religion-proxy/1.0.0/`` (default ``--out``:
tests/fixtures/packages/), which the gateway must REFUSE to load.  It is the
caravan-logreg pipeline trained on the 78 bundled inputs plus the four
zip-code religion shares MGODRK, MGODPR, MGODOV and MGODGE (82 inputs, in
the original column order), with those four declared truthfully in its
manifest as ``proxy_for = "religion"`` and the purpose
``personalised_advertising``.  It exists so that a Rust test can prove the
refusal; it is never a bundled model.  The bundled packages are not written
(or changed) by a ``--fixture`` run.
"""

from __future__ import annotations

import os

# Single-threaded BLAS/OpenMP before numpy is imported: summation order, and
# so the MLP's weights, must not depend on the thread count.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import csv  # noqa: E402
import hashlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tomllib  # noqa: E402
import warnings  # noqa: E402
from decimal import ROUND_FLOOR, Decimal  # noqa: E402
from pathlib import Path  # noqa: E402

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pandas as pd  # noqa: E402
from onnxmltools import convert_lightgbm  # noqa: E402
from onnxmltools.convert.common.data_types import FloatTensorType as OnnxmltoolsFloatTensorType  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType as Skl2onnxFloatTensorType  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.dont_write_bytecode = True  # leave no __pycache__ in models/
sys.path.insert(0, str(HERE))
import caravan_features as cf  # noqa: E402
import tree_covers  # noqa: E402  (covers.csv, shared with attribution_goldens.py)

# --------------------------------------------------------------------------
# Fixed settings
# --------------------------------------------------------------------------

SEED = 20261129
TRAINING_DATE = "2026-11-29"  # fixed so that re-runs reproduce the manifests
SCRIPT = "models/train_caravan.py"

ISLP_VERSION = "0.6.0"
CSV_SHA256 = "e89d49b6fb8fe02d76bb5bb80d8e0dab473bf9f6a72515e30c259f6d7da42269"
CSV_ROWS = 5822
TARGET = "Purchase"

HOLDOUT_FRACTION = 0.2
BACKGROUND_ROWS = 256
GOLDEN_ROWS = 300
# The ad is shown for the top 20% of scores; the CoIL 2000 challenge scored
# entries by the buyers found among the 20% (800 of 4,000) customers selected.
SELECTION_RATE = 0.20

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
OUTPUT_INDEX = 1
N_FEATURES = 78
# Opsets written into every model: a default-domain opset and ai.onnx.ml 3
# (the last ai.onnx.ml opset whose TreeEnsembleClassifier is not deprecated).
OPSETS = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 8  # the IR version that goes with opset 17

OWNER = "Candor ML Platform <ml-platform@candor.example>"
PURPOSES = ["personalised_advertising"]
INTENDED_USE = (
    "Rank caravan-insurance ads for adult policy holders who consented to personalised "
    "advertising. Not for credit, pricing, employment or eligibility decisions."
)
OUTPUT_DESCRIPTION = "Probability that the household buys a caravan insurance policy"
EXCLUDED_COLUMNS = ["MGODRK", "MGODPR", "MGODOV", "MGODGE", "MGEMLEEF", "MOSTYPE", "MOSHOOFD"]

ORT_VERSION = "1.31.1"

CV_FOLDS = 5

# Maximum |onnxruntime - native predict_proba| tolerated on the hold-out.
PARITY_TOLERANCE = 1e-5

# Optional sidecar of tree packages (src/models/package.rs COVERS_FILE).
COVERS_FILE = "covers.csv"


def pinned(*dists: str) -> list[str]:
    return [f"{d}=={importlib.metadata.version(d)}" for d in dists]


# --------------------------------------------------------------------------
# Model definitions
# --------------------------------------------------------------------------

def lgbm(n_estimators: int, num_leaves: int, learning_rate: float,
         colsample_bytree: float = 0.6, reg_lambda: float = 5.0) -> lgb.LGBMClassifier:
    """A bagged LightGBM classifier, seeded and single-threaded (reproducible)."""
    return lgb.LGBMClassifier(
        n_estimators=n_estimators,
        num_leaves=num_leaves,
        learning_rate=learning_rate,
        min_child_samples=100,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=colsample_bytree,
        reg_lambda=reg_lambda,
        random_state=SEED,
        deterministic=True,
        force_row_wise=True,
        n_jobs=1,
        verbose=-1,
    )


def make_lgbm_1_0_0():
    # Regularisation (min_child_samples, colsample, reg_lambda) chosen by
    # 5-fold CV on the training split only; the hold-out was not used.
    return lgbm(300, 31, 0.03, colsample_bytree=0.5, reg_lambda=10.0)


def make_lgbm_1_1_0():
    return lgbm(200, 15, 0.02)


def make_lgbm_1_2_0():
    # The configuration with the best mean ROC AUC in 5-fold CV on the
    # training split over num_leaves {3, 4, 7, 15, 31} x learning_rate
    # {0.02, 0.05, 0.1} x n_estimators {10 ... 300}, with 1.1.0's
    # regularisation (select_lgbm.py, models/README.md). Shallow trees suit
    # 4,657 rows with 280 buyers; the hold-out was not used to choose.
    return lgbm(150, 4, 0.05)


def make_logreg():
    # Raw (unscaled) codes on purpose: the ONNX graph is one LinearClassifier.
    return LogisticRegression(C=0.1, solver="lbfgs", max_iter=20000, tol=1e-6)


def make_mlp():
    # early_stopping is OFF on purpose.  scikit-learn's early stopping
    # monitors validation *accuracy*; with 6% positives accuracy never beats
    # the majority class, so it keeps the first epoch's weights (5-fold CV
    # AUC on the training split ~0.59).  A fixed budget of 60 epochs with
    # strong L2 (alpha=3) gave CV AUC ~0.75 instead.
    return Pipeline([
        ("scaler", StandardScaler()),
        ("mlp", MLPClassifier(
            hidden_layer_sizes=(32, 16),
            activation="relu",
            solver="adam",
            alpha=3.0,
            batch_size=200,
            learning_rate_init=1e-3,
            max_iter=60,
            early_stopping=False,
            shuffle=True,
            random_state=SEED,
        )),
    ])


def fit_plain(est, X, y):
    # A model that stops before converging is an error, not a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X, y)
    return est


def fit_fixed_epochs(est, X, y):
    # The epoch budget is deliberate; the optimiser is not run to tolerance.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    return est


def convert_lgbm(est, graph_name, n_features=N_FEATURES):
    return convert_lightgbm(
        est,
        name=graph_name,
        initial_types=[(INPUT_NAME, OnnxmltoolsFloatTensorType([None, n_features]))],
        target_opset=15,  # highest onnxmltools 1.16.0 accepts; re-pinned to OPSETS below
        zipmap=False,
    )


def convert_skl(est, graph_name, n_features=N_FEATURES):
    return convert_sklearn(
        est,
        name=graph_name,
        initial_types=[(INPUT_NAME, Skl2onnxFloatTensorType([None, n_features]))],
        target_opset=dict(OPSETS),
        options={"zipmap": False},
    )


def lgbm_package(version: str, make, description: str, default: bool = False) -> dict:
    """A caravan-lgbm version: trained by ``make``, with node covers."""
    return {
        "name": "caravan-lgbm",
        "version": version,
        "default": default,
        "make": make,
        "fit": fit_plain,
        "convert": convert_lgbm,
        "covers": True,
        "libraries": ("lightgbm", "scikit-learn", "onnxmltools", "onnx", "onnxruntime",
                      "numpy", "pandas"),
        "description": description,
    }


MODELS = [
    lgbm_package(
        "1.0.0", make_lgbm_1_0_0, default=True, description=(
            "Predicts the probability that a customer buys a caravan insurance policy from 78 "
            "zip-code demographic and first-party policy-ownership features. LightGBM "
            "gradient-boosted trees (300 trees, 31 leaves, learning rate 0.03)."
        ),
    ),
    lgbm_package(
        "1.1.0", make_lgbm_1_1_0, description=(
            "Candidate version of caravan-lgbm: predicts the probability that a customer buys a "
            "caravan insurance policy with a smaller LightGBM ensemble (200 trees, 15 leaves, "
            "learning rate 0.02) on the same 78 features."
        ),
    ),
    lgbm_package(
        "1.2.0", make_lgbm_1_2_0, description=(
            "Predicts the probability that a customer buys a caravan insurance policy from the "
            "same 78 features with shallow LightGBM trees (150 trees, 4 leaves, learning rate "
            "0.05), the configuration with the best cross-validated ROC AUC."
        ),
    ),
    {
        "name": "caravan-logreg",
        "version": "1.0.0",
        "default": False,
        "make": make_logreg,
        "fit": fit_plain,
        "convert": convert_skl,
        "libraries": ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas"),
        "description": (
            "Predicts the probability that a customer buys a caravan insurance policy with an "
            "L2-regularised logistic regression (C=0.1) on the raw, unscaled feature codes; "
            "a transparent linear baseline."
        ),
    },
    {
        "name": "caravan-mlp",
        "version": "1.0.0",
        "default": False,
        "make": make_mlp,
        "fit": fit_fixed_epochs,
        "convert": convert_skl,
        "libraries": ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas"),
        "description": (
            "Predicts the probability that a customer buys a caravan insurance policy with a "
            "small neural network: standardised features, then a 32-16 ReLU multilayer "
            "perceptron (L2 alpha=3, 60 epochs)."
        ),
    },
]

# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------

def caravan_csv() -> Path:
    """Path of ISLP/data/Caravan.csv, found without importing ISLP."""
    version = importlib.metadata.version("ISLP")
    if version != ISLP_VERSION:
        raise SystemExit(f"ISLP=={ISLP_VERSION} required, found {version}")
    spec = importlib.util.find_spec("ISLP")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ISLP is not installed (pip install --no-deps ISLP==0.6.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "Caravan.csv"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != CSV_SHA256:
        raise SystemExit(f"{path}: unexpected SHA-256 {digest}")
    return path


def load_data():
    path = caravan_csv()
    df = pd.read_csv(path)
    assert list(df.columns) == cf.ALL_COLUMNS + [TARGET], "unexpected columns"
    assert len(df) == CSV_ROWS, len(df)
    assert not df.isna().any().any(), "missing values"
    assert set(df[TARGET].unique()) == {"Yes", "No"}
    # Every value must lie in the documented domain of its column.
    for f in cf.FEATURES:
        col = df[f["name"]]
        assert pd.api.types.is_integer_dtype(col), f["name"]
        if f["type"] == "categorical":
            bad = set(col.unique()) - set(f["categories"])
        else:
            bad = set(col[(col < f["min"]) | (col > f["max"])].unique())
        assert not bad, f"{f['name']}: values {sorted(bad)} outside the documented range"
    features = cf.MODEL_FEATURES
    assert len(features) == N_FEATURES
    assert not set(features) & set(EXCLUDED_COLUMNS)
    assert set(EXCLUDED_COLUMNS) == set(cf.EXCLUDED)
    X = df[features].to_numpy(dtype=np.float32)
    y = (df[TARGET] == "Yes").to_numpy(dtype=np.int64)
    return df, features, X, y


def split(y):
    idx = np.arange(len(y))
    train_idx, hold_idx = train_test_split(
        idx, test_size=HOLDOUT_FRACTION, stratify=y, random_state=SEED, shuffle=True
    )
    return np.sort(train_idx), np.sort(hold_idx)


# --------------------------------------------------------------------------
# ONNX helpers
# --------------------------------------------------------------------------

def ort_session(model_bytes: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def ort_probabilities(model_bytes: bytes, X: np.ndarray) -> np.ndarray:
    sess = ort_session(model_bytes)
    (probs,) = sess.run([OUTPUT_NAME], {INPUT_NAME: X})
    assert probs.dtype == np.float32 and probs.shape == (len(X), 2), probs.shape
    return probs


def finalize_onnx(model: onnx.ModelProto, name: str, version: str, X_check: np.ndarray,
                  features: list[str] = cf.MODEL_FEATURES):
    """Normalise a converted model; returns the final ModelProto.

    * opset imports: exactly one entry per domain, pinned to OPSETS (the LightGBM
      converter only declares the minimum versions its ops need, e.g. '' 9 /
      ai.onnx.ml 1, and skl2onnx repeats the default domain);
    * IR version matching the opsets;
    * output shapes: the LightGBM converter declares ``label`` as [1]; it is [N];
    * graph name / doc string / metadata set explicitly (no random UUIDs).
    The rewritten model must give bit-identical outputs to the converted one.
    """
    before = onnx.ModelProto()
    before.CopyFrom(model)

    for node in model.graph.node:
        if node.op_type == "ZipMap":
            raise AssertionError("ZipMap must not be in the exported graph")
        if node.domain not in OPSETS:
            raise AssertionError(f"unexpected op domain {node.domain!r}")
    del model.opset_import[:]
    for domain, ver in OPSETS.items():
        model.opset_import.append(onnx.helper.make_opsetid(domain, ver))
    model.ir_version = IR_VERSION

    outputs = {o.name: o for o in model.graph.output}
    assert set(outputs) == {"label", OUTPUT_NAME}, list(outputs)
    for out_name, rank in (("label", 1), (OUTPUT_NAME, 2)):
        dims = outputs[out_name].type.tensor_type.shape.dim
        assert len(dims) == rank, (out_name, dims)
        dims[0].Clear()  # unknown batch dimension
    assert outputs[OUTPUT_NAME].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert outputs[OUTPUT_NAME].type.tensor_type.shape.dim[1].dim_value == 2
    assert outputs["label"].type.tensor_type.elem_type == onnx.TensorProto.INT64

    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    assert len(in_dims) == 2 and in_dims[1].dim_value == len(features) == X_check.shape[1]
    in_dims[0].Clear()

    model.graph.name = f"{name}-{version}".replace("-", "_").replace(".", "_")
    model.doc_string = f"{name} {version}: P(caravan insurance purchase), Candor model package"
    del model.metadata_props[:]
    for key, value in (("candor.model.name", name), ("candor.model.version", version),
                       ("candor.input.features", ",".join(features))):
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))

    onnx.checker.check_model(model, full_check=True)

    old = ort_session(before.SerializeToString()).run(None, {INPUT_NAME: X_check})
    new = ort_session(model.SerializeToString()).run(None, {INPUT_NAME: X_check})
    for a, b in zip(old, new):
        assert a.dtype == b.dtype and np.array_equal(a, b), "opset pinning changed outputs"
    return model


def describe_graph(model: onnx.ModelProto) -> dict:
    ops = []
    for node in model.graph.node:
        label = f"{node.domain + '.' if node.domain else ''}{node.op_type}"
        for attr in node.attribute:
            if attr.name == "post_transform":
                label += f"(post_transform={onnx.helper.get_attribute_value(attr).decode()})"
        ops.append(label)
    return {
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ir_version": model.ir_version,
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
        "ops": ops,
    }


# --------------------------------------------------------------------------
# Metrics and threshold
# --------------------------------------------------------------------------

def floor_sig(x: float, digits: int = 4) -> float:
    """Round x down to `digits` significant digits (so the selection grows)."""
    d = Decimal(repr(float(x)))
    exponent = d.adjusted() - digits + 1
    return float(d.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_FLOOR))


def choose_threshold(scores: np.ndarray) -> float:
    k = int(np.ceil(SELECTION_RATE * len(scores)))
    kth = float(np.sort(scores.astype(np.float64))[::-1][k - 1])
    return floor_sig(kth)


def cv_roc_auc(spec: dict, X: np.ndarray, y: np.ndarray) -> float:
    """Mean ROC AUC of 5-fold stratified CV on the training split (native scores).

    A steadier estimate than the hold-out, which has only 70 buyers."""
    folds = StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=SEED)
    aucs = []
    for tr, te in folds.split(X, y):
        est = spec["fit"](spec["make"](), X[tr], y[tr])
        aucs.append(roc_auc_score(y[te], est.predict_proba(X[te])[:, 1]))
    return float(np.mean(aucs))


def evaluate(scores: np.ndarray, y: np.ndarray, threshold: float) -> list[tuple[str, float]]:
    selected = scores.astype(np.float64) >= threshold
    tp = int((selected & (y == 1)).sum())
    return [
        ("roc_auc", roc_auc_score(y, scores)),
        ("average_precision", average_precision_score(y, scores)),
        ("selection_rate_at_threshold", selected.mean()),
        ("precision_at_threshold", tp / max(int(selected.sum()), 1)),
        ("recall_at_threshold", tp / int((y == 1).sum())),
    ]


# --------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------

def toml_str(s: str) -> str:
    # JSON string escapes (\" \\ \n \uXXXX ...) are all valid TOML basic-string escapes.
    return json.dumps(s, ensure_ascii=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        assert np.isfinite(v)
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def write_manifest(path: Path, spec: dict, features: list[str], n_train: int, n_hold: int,
                   threshold: float, metrics: list[tuple[str, float]], cv_auc: float):
    hold_desc = f"hold-out split ({n_hold} rows)"
    cv_desc = (f"{CV_FOLDS}-fold stratified cross-validation on the training split "
               f"({n_train} rows), mean")
    lines = ["schema_version = 1", "", "[model]"]
    lines.append(f"name = {toml_str(spec['name'])}")
    lines.append(f"version = {toml_str(spec['version'])}")
    if spec["default"]:
        lines.append("default = true")
    lines.append(f"description = {toml_str(spec['description'])}")
    lines.append(f"owner = {toml_str(OWNER)}")
    lines.append(f"purposes = {toml_value(PURPOSES)}")
    lines.append(f"intended_use = {toml_str(spec.get('intended_use', INTENDED_USE))}")
    lines += ["", "[model.input]", f"tensor = {toml_str(INPUT_NAME)}"]
    lines += [
        "", "[model.output]",
        f"tensor = {toml_str(OUTPUT_NAME)}",
        f"index = {OUTPUT_INDEX}",
        f"description = {toml_str(OUTPUT_DESCRIPTION)}",
        f"decision_threshold = {toml_value(threshold)}",
    ]
    lines += [
        "", "[training]",
        "dataset = " + toml_str(
            f"Caravan (CoIL 2000 Challenge), ISLP {ISLP_VERSION} ISLP/data/Caravan.csv, "
            f"{CSV_ROWS} rows, sha256 {CSV_SHA256}"),
        f"date = {toml_str(TRAINING_DATE)}",
        f"script = {toml_str(SCRIPT)}",
        f"train_rows = {n_train}",
        f"holdout_rows = {n_hold}",
        f"split = {toml_str(f'stratified 80/20, seed {SEED}')}",
        f"excluded_columns = {toml_value(spec.get('excluded_columns', EXCLUDED_COLUMNS))}",
        f"libraries = {toml_value(pinned(*spec['libraries']))}",
    ]
    for metric, value in metrics:
        lines += ["", "[[metrics]]", f"name = {toml_str(metric)}",
                  f"value = {toml_value(round(float(value), 4))}",
                  f"dataset = {toml_str(hold_desc)}"]
    lines += ["", "[[metrics]]", f"name = {toml_str('cv_roc_auc')}",
              f"value = {toml_value(round(cv_auc, 4))}", f"dataset = {toml_str(cv_desc)}"]
    overrides = spec.get("feature_overrides", {})
    for position, fname in enumerate(features):
        f = {**cf.BY_NAME[fname], **overrides.get(fname, {})}
        lines += ["", "[[features]]", f"name = {toml_str(fname)}", f"position = {position}",
                  f"type = {toml_str(f['type'])}"]
        if f["type"] == "categorical":
            lines.append(f"categories = {toml_value(f['categories'])}")
        else:
            lines += [f"min = {f['min']}", f"max = {f['max']}"]
        lines += [
            "missing_allowed = false",
            f"description = {toml_str(f['description'])}",
            f"category = {toml_str(f['category'])}",
        ]
        if f.get("proxy_for"):  # only the test fixture declares proxies
            lines.append(f"proxy_for = {toml_str(f['proxy_for'])}")
        lines += [
            f"source = {toml_str(f['source'])}",
            "reason_group = " + toml_str(
                "your_activity" if f["category"] == "first_party_purchase_history"
                else "your_info"),
            f"reason = {toml_value({'en': f['reason']['en'], 'nl': f['reason']['nl']})}",
        ]
    for g in cf.groups_for(features) + spec.get("extra_groups", []):
        lines += ["", "[[groups]]", f"name = {toml_str(g['name'])}",
                  f"description = {toml_str(g['description'])}",
                  f"features = {toml_value(g['features'])}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_csv(path: Path, header: list[str], rows):
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def int_row(x: np.ndarray) -> list[str]:
    out = []
    for v in x:
        assert float(v).is_integer()
        out.append(str(int(v)))
    return out


# --------------------------------------------------------------------------
# Verification of a written package
# --------------------------------------------------------------------------

def verify_package(pkg: Path, features: list[str], threshold: float,
                   excluded: list[str] = EXCLUDED_COLUMNS, covers: dict | None = None):
    manifest = tomllib.loads((pkg / "manifest.toml").read_text(encoding="utf-8"))
    assert manifest["schema_version"] == 1
    assert manifest["model"]["input"]["tensor"] == INPUT_NAME
    assert manifest["model"]["output"]["tensor"] == OUTPUT_NAME
    assert manifest["model"]["output"]["decision_threshold"] == threshold
    assert [f["name"] for f in manifest["features"]] == features
    assert [f["position"] for f in manifest["features"]] == list(range(len(features)))
    assert manifest["training"]["excluded_columns"] == excluded
    in_group = [n for g in manifest["groups"] for n in g["features"]]
    assert sorted(in_group) == sorted(features), "groups must cover each feature once"
    assert all(g["features"] for g in manifest["groups"])

    model_bytes = (pkg / "model.onnx").read_bytes()
    sess = ort_session(model_bytes)
    (inp,) = sess.get_inputs()
    assert inp.name == INPUT_NAME and inp.type == "tensor(float)", inp
    assert inp.shape[1] == len(features) and not isinstance(inp.shape[0], int), inp.shape
    outs = {o.name: o for o in sess.get_outputs()}
    assert outs[OUTPUT_NAME].type == "tensor(float)" and outs[OUTPUT_NAME].shape[1] == 2

    golden = pd.read_csv(pkg / "golden.csv")
    assert list(golden.columns) == features + ["score"]
    Xg = golden[features].to_numpy(dtype=np.float32)
    scores = ort_probabilities(model_bytes, Xg)[:, OUTPUT_INDEX]
    assert np.array_equal(scores, golden["score"].to_numpy(dtype=np.float64).astype(np.float32))
    assert np.array_equal(scores.astype(np.float64), golden["score"].to_numpy(dtype=np.float64))

    background = pd.read_csv(pkg / "background.csv")
    assert list(background.columns) == features and len(background) == BACKGROUND_ROWS

    # No excluded column may be an input, a group member or a CSV column.
    meta = {p.key: p.value for p in onnx.load_from_string(model_bytes).metadata_props}
    assert meta["candor.input.features"].split(",") == features
    for used in (features, in_group, list(golden.columns), list(background.columns)):
        assert not set(used) & set(excluded), set(used) & set(excluded)

    # covers.csv: exactly the covers computed, one per ONNX node, or no file.
    covers_path = pkg / COVERS_FILE
    if covers is None:
        assert not covers_path.exists(), covers_path
    else:
        with covers_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            assert next(reader) == tree_covers.COVERS_HEADER.split(",")
            read = {(int(t), int(n)): float(c) for t, n, c in reader}
        assert read == covers, "covers.csv does not read back"
        ens = tree_covers.OnnxEnsemble(onnx.load_from_string(model_bytes))
        assert set(read) == {(t, n) for t, tree in ens.trees.items() for n in tree}


# --------------------------------------------------------------------------
# Test fixture: a package the gateway must refuse
# --------------------------------------------------------------------------

# The zip-code religion shares, used ONLY by the refusal test fixture.
RELIGION_PROXY_COLUMNS = ["MGODRK", "MGODPR", "MGODOV", "MGODGE"]
FIXTURE_OUT = REPO / "tests" / "fixtures" / "packages"

FIXTURES = {
    "religion-proxy": {
        "name": "caravan-religion-proxy",
        "version": "1.0.0",
        "default": False,
        # Same pipeline as caravan-logreg, so the graph is one LinearClassifier.
        "make": make_logreg,
        "fit": fit_plain,
        "convert": convert_skl,
        "libraries": ("scikit-learn", "skl2onnx", "onnx", "onnxruntime", "numpy", "pandas"),
        "description": (
            "TEST FIXTURE, MUST BE REFUSED: the gateway must refuse to load this package. "
            "The caravan-logreg pipeline (L2-regularised logistic regression, C=0.1, on the raw "
            "feature codes) trained on the 78 bundled features plus the four zip-code religion "
            "shares MGODRK, MGODPR, MGODOV and MGODGE, which are declared proxies for religion, a "
            "GDPR Art. 9 special category that may not serve personalised advertising."
        ),
        "intended_use": (
            "None. Test fixture only (tests/fixtures/packages): it proves that the gateway "
            "refuses a personalised-advertising model whose features are declared proxies for "
            "religion. Never deploy or serve it."
        ),
        "excluded_columns": [c for c in EXCLUDED_COLUMNS if c not in RELIGION_PROXY_COLUMNS],
        # Declared truthfully: zip-code aggregates standing in for religion.  The
        # descriptions are the data-dictionary texts from caravan_features.py.
        "feature_overrides": {
            c: {
                "category": "zip_code_demographics",
                "source": "zip_code_aggregate",
                "proxy_for": "religion",
                "reason": {"en": "the religious make-up of your neighbourhood",
                           "nl": "de religieuze samenstelling van je buurt"},
            }
            for c in RELIGION_PROXY_COLUMNS
        },
        "extra_groups": [{
            "name": "religion",
            "description": "Religious make-up of the household's zip code (declared proxy for "
                           "religion, a GDPR Art. 9 special category)",
            "features": list(RELIGION_PROXY_COLUMNS),
        }],
    },
}


def fixture_features(spec: dict) -> list[str]:
    """The fixture's inputs: every column not excluded, in the original column order."""
    return [c for c in cf.ALL_COLUMNS if c not in spec["excluded_columns"]]


def verify_fixture(pkg: Path, spec: dict):
    """The fixture declares the religion proxies truthfully, for advertising."""
    manifest = tomllib.loads((pkg / "manifest.toml").read_text(encoding="utf-8"))
    assert manifest["model"]["purposes"] == ["personalised_advertising"]
    declared = {f["name"]: f for f in manifest["features"]}
    for c in RELIGION_PROXY_COLUMNS:
        f = declared[c]
        assert (f["category"], f["source"], f["proxy_for"]) == (
            "zip_code_demographics", "zip_code_aggregate", "religion"), f
        assert f["description"] == cf.BY_NAME[c]["description"], f
    proxies = [f["name"] for f in manifest["features"] if "proxy_for" in f]
    assert proxies == RELIGION_PROXY_COLUMNS, proxies


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def build_package(spec: dict, features: list[str], X: np.ndarray, y: np.ndarray,
                  train_idx: np.ndarray, hold_idx: np.ndarray,
                  background_rows: np.ndarray, golden_rows: np.ndarray, out: Path,
                  excluded: list[str] = EXCLUDED_COLUMNS) -> Path:
    """Train, export, write and verify one package; returns its folder."""
    name, version = spec["name"], spec["version"]
    assert X.shape[1] == len(features)
    X_train, y_train = X[train_idx], y[train_idx]
    X_hold, y_hold = X[hold_idx], y[hold_idx]
    X_background = X_train[background_rows]
    X_golden = X_hold[golden_rows]

    est = spec["fit"](spec["make"](), X_train, y_train)

    graph_name = f"{name}-{version}"
    model = spec["convert"](est, graph_name, len(features))
    model = finalize_onnx(model, name, version, X, features)
    model_bytes = model.SerializeToString()

    # Parity: onnxruntime vs the native model on the hold-out.
    hold_probs = ort_probabilities(model_bytes, X_hold)
    native = est.predict_proba(X_hold)
    assert list(est.classes_) == [0, 1]
    diff = float(np.abs(hold_probs.astype(np.float64) - native).max())
    assert diff < PARITY_TOLERANCE, f"{graph_name}: ONNX/native max diff {diff}"
    assert np.allclose(hold_probs.sum(axis=1), 1.0, atol=1e-6)

    hold_scores = hold_probs[:, OUTPUT_INDEX]
    threshold = choose_threshold(hold_scores)
    metrics = evaluate(hold_scores, y_hold, threshold)
    cv_auc = cv_roc_auc(spec, X_train, y_train)

    pkg = out / name / version
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "model.onnx").write_bytes(model_bytes)
    write_csv(pkg / "background.csv", features, (int_row(r) for r in X_background))
    golden_scores = ort_probabilities(model_bytes, X_golden)[:, OUTPUT_INDEX]
    write_csv(pkg / "golden.csv", features + ["score"],
              (int_row(r) + [repr(float(s))] for r, s in zip(X_golden, golden_scores)))
    write_manifest(pkg / "manifest.toml", spec, features, len(train_idx), len(hold_idx),
                   threshold, metrics, cv_auc)
    covers = None
    if spec.get("covers"):
        # Node covers from the native booster, keyed by this model.onnx's ids.
        covers = tree_covers.lgbm_covers(est.booster_, model)
        tree_covers.write_covers(pkg / COVERS_FILE, covers)
    elif (pkg / COVERS_FILE).exists():
        (pkg / COVERS_FILE).unlink()  # stale: the gateway would load it
    verify_package(pkg, features, threshold, excluded, covers)

    info = describe_graph(model)
    print(f"\n{graph_name} -> {pkg}")
    print(f"  graph: opsets {info['opsets']}, IR {info['ir_version']}, "
          f"inputs {info['inputs']}, outputs {info['outputs']}")
    print(f"  ops: {', '.join(info['ops'])}")
    print(f"  max |onnx - native| on hold-out: {diff:.3g}")
    if covers is not None:
        print(f"  {COVERS_FILE}: {len(covers)} nodes")
    print(f"  decision_threshold {threshold!r}; " + ", ".join(
        f"{m} {v:.4f}" for m, v in metrics) + f", cv_roc_auc {cv_auc:.4f}")
    return pkg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder for <name>/<version>/ packages (default: models/, "
                         "or tests/fixtures/packages/ with --fixture)")
    ap.add_argument("--fixture", choices=sorted(FIXTURES),
                    help="write only this test-fixture package (which the gateway must "
                         "refuse) instead of the bundled models")
    args = ap.parse_args(argv)

    if ort.__version__ != ORT_VERSION:
        raise SystemExit(f"onnxruntime=={ORT_VERSION} required for golden scores, "
                         f"found {ort.__version__}")

    df, features, X, y = load_data()
    train_idx, hold_idx = split(y)
    print(f"rows: train {len(train_idx)} ({y[train_idx].sum()} buyers), "
          f"hold-out {len(hold_idx)} ({y[hold_idx].sum()} buyers)")

    # Row samples (indices into the train / hold-out splits), shared by all packages.
    rng = np.random.default_rng(SEED)
    background_rows = np.sort(rng.choice(len(train_idx), BACKGROUND_ROWS, replace=False))
    golden_rows = np.sort(rng.choice(len(hold_idx), GOLDEN_ROWS, replace=False))
    rows = (train_idx, hold_idx, background_rows, golden_rows)

    if args.fixture:
        spec = FIXTURES[args.fixture]
        fx_features = fixture_features(spec)
        assert fx_features == [c for c in cf.ALL_COLUMNS
                               if c in features or c in RELIGION_PROXY_COLUMNS]
        X_fx = df[fx_features].to_numpy(dtype=np.float32)
        pkg = build_package(spec, fx_features, X_fx, y, *rows, args.out or FIXTURE_OUT,
                            excluded=spec["excluded_columns"])
        verify_fixture(pkg, spec)
        return 0

    for spec in MODELS:
        build_package(spec, features, X, y, *rows, args.out or HERE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
