"""Writes tests/fixtures/gate/noisy.onnx, the graph the validation gate's
``attributions_additive`` rule must catch (tests/validate.rs).

Every attribution method Candor has is additive by construction on a
deterministic graph, so the one way a package breaks the rule is a graph
that is not a function of its input: here a linear layer plus uniform noise
(``RandomUniformLike``, unseeded: what a dropout left in training mode or a
noise layer left in an exported graph does).  It has the Caravan packages'
interface (input ``input`` float32 [N, 78], output ``probabilities`` float32
[N, 2]), so a test swaps it into a copy of ``caravan-mlp/1.0.0``, whose
model-agnostic Shapley estimator then no longer adds up to the score.

    .venv-models/bin/python tests/gate_fixtures.py   (pins: models/requirements.txt)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent / "fixtures" / "gate" / "noisy.onnx"
FEATURES = 78


def main() -> int:
    weights = np.full((FEATURES, 2), 0.01, dtype=np.float32)
    weights[:, 1] = -0.01
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "weights"], ["logits"]),
            helper.make_node("RandomUniformLike", ["logits"], ["noise"], low=-1.0, high=1.0),
            helper.make_node("Add", ["logits", "noise"], ["noisy"]),
            helper.make_node("Softmax", ["noisy"], ["probabilities"], axis=1),
        ],
        "noisy",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="tests/gate_fixtures.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(model.SerializeToString())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
