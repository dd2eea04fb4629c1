"""Goldens from the Python `shap` library for the bundled models that are not
tree ensembles (issue #3): the logistic regression and the MLP.

- caravan-logreg: `shap.LinearExplainer` (interventional: an Independent
  masker over the package's whole background sample) on the coefficients of the ONNX graph's
  LinearClassifier, in log-odds. Candor's exact linear attributions must
  equal these within 1e-6 * max(1, |margin|).
- caravan-mlp: the exact interventional Shapley values of the ONNX model's
  probability, from `shap.explainers.Exact`. With 78 features that game has
  2^78 coalitions, so each row is explained against background rows that
  agree with it everywhere except in the 12 columns that vary most in the
  package's background: the other 66 features are then dummies (value 0),
  and the game over the 12 is enumerated exactly. Candor's sampling
  estimator (78 features, so it samples) must match within 3 of its own
  standard errors.

- logreg-matmul.onnx and logreg-gemm.onnx: the logistic regression's
  coefficients as plain linear layers (`MatMul` then `Add`, and one `Gemm`
  with transB, alpha and beta; both then `Sigmoid`), with two output
  columns (class 0 and class 1, as the LinearClassifier's `probabilities`),
  so that the caravan-logreg package and its golden serve them unchanged.

The model is run with onnxruntime on the committed model.onnx, as Candor
runs it. Versions are pinned in models/requirements.txt and
models/requirements-goldens.txt.

Usage: .venv-models/bin/python models/bundled_attribution_goldens.py
writes tests/fixtures/bundled-attributions/{caravan-logreg,caravan-mlp}.json
and logreg-{matmul,gemm}.onnx
"""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import shap
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/bundled-attributions"
ROWS = 5
MLP_VARYING = 12
MLP_BACKGROUND = 20


def load_csv(path: Path, drop_score: bool) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().strip().splitlines()
    header = lines[0].split(",")
    values = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    if drop_score:
        return header[:-1], values[:, :-1]
    return header, values


def package(name: str):
    directory = ROOT / "models" / name / "1.0.0"
    columns, golden = load_csv(directory / "golden.csv", drop_score=True)
    _, background = load_csv(directory / "background.csv", drop_score=False)
    return directory, columns, golden[:ROWS], background


def logreg() -> dict:
    directory, columns, rows, background = package("caravan-logreg")
    model = onnx.load(directory / "model.onnx")
    (node,) = [n for n in model.graph.node if n.op_type == "LinearClassifier"]
    attributes = {a.name: a for a in node.attribute}
    width = len(columns)
    coefficients = np.array(attributes["coefficients"].floats, dtype=np.float32).astype(float)
    intercepts = np.array(attributes["intercepts"].floats, dtype=np.float32).astype(float)
    # One row of coefficients per class; the score is class 1's probability.
    coef, intercept = coefficients[width : 2 * width], intercepts[1]
    # The whole background: Independent would subsample beyond max_samples.
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.LinearExplainer((coef, intercept), masker)
    phi = explainer.shap_values(rows)
    margins = rows @ coef + intercept
    linear_layers(coef, intercept, background)
    return {
        "model": "caravan-logreg",
        "source": "shap.LinearExplainer((coef, intercept), shap.maskers.Independent(background))",
        "shap": shap.__version__,
        "columns": columns,
        "rows": rows.tolist(),
        "base_value": float(explainer.expected_value),
        "margins": margins.tolist(),
        "phi": phi.tolist(),
    }


def linear_layers(coef: np.ndarray, intercept: float, rows: np.ndarray) -> None:
    """Writes the two plain-layer forms of the logistic regression."""
    w = np.stack([-coef, coef], axis=1).astype(np.float32)  # [78, 2]
    b = np.array([-intercept, intercept], dtype=np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, len(coef)])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    graphs = {
        "logreg-matmul": helper.make_graph(
            [
                helper.make_node("MatMul", ["input", "W"], ["xw"]),
                helper.make_node("Add", ["xw", "b"], ["margin"]),
                helper.make_node("Sigmoid", ["margin"], ["probabilities"]),
            ],
            "logreg_matmul", [x], [y],
            [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
        ),
        # W transposed and halved, alpha 2; the bias doubled, beta 0.5.
        "logreg-gemm": helper.make_graph(
            [
                helper.make_node("Gemm", ["input", "Wt", "c"], ["margin"],
                                 transB=1, alpha=2.0, beta=0.5),
                helper.make_node("Sigmoid", ["margin"], ["probabilities"]),
            ],
            "logreg_gemm", [x], [y],
            [numpy_helper.from_array(np.ascontiguousarray(w.T / 2), "Wt"),
             numpy_helper.from_array(b * 2, "c")],
        ),
    }
    for name, graph in graphs.items():
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        onnx.checker.check_model(model, full_check=True)
        path = OUT / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        p = session.run(["probabilities"], {"input": rows.astype(np.float32)})[0][:, 1]
        expected = 1 / (1 + np.exp(-(rows @ coef + intercept)))
        assert np.abs(p - expected).max() < 1e-6, name
        print(f"wrote {path.relative_to(ROOT)}")


def mlp() -> dict:
    directory, columns, rows, background = package("caravan-mlp")
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])

    def probability(x: np.ndarray) -> np.ndarray:
        out = session.run(["probabilities"], {"input": x.astype(np.float32)})[0]
        return out[:, 1].astype(float)

    references = background[:MLP_BACKGROUND]
    varying = sorted(np.argsort(-background.std(axis=0), kind="stable")[:MLP_VARYING].tolist())
    phi, base, value = [], [], []
    for x in rows:
        def restricted(z: np.ndarray, x=x) -> np.ndarray:
            full = np.repeat(x[None, :], len(z), axis=0)
            full[:, varying] = z
            return probability(full)

        masker = shap.maskers.Independent(references[:, varying], max_samples=len(references))
        explanation = shap.explainers.Exact(restricted, masker)(x[None, varying])
        row_phi = np.zeros(len(columns))
        row_phi[varying] = explanation.values[0]
        phi.append(row_phi.tolist())
        base.append(float(explanation.base_values[0]))
        value.append(float(probability(x[None, :])[0]))
    return {
        "model": "caravan-mlp",
        "source": "shap.explainers.Exact over the varying columns, shap.maskers.Independent(background rows)",
        "shap": shap.__version__,
        "columns": columns,
        "rows": rows.tolist(),
        "background": references.tolist(),
        "varying": varying,
        "phi": phi,
        "base_values": base,
        "values": value,
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)  # before logreg(), which writes the layers
    for golden in (logreg(), mlp()):
        path = OUT / f"{golden['model']}.json"
        path.write_text(json.dumps(golden, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
