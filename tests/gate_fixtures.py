"""Writes the graphs of broken packages the tests build:

- tests/fixtures/gate/noisy.onnx, the graph the validation gate's
  ``attributions_additive`` rule must catch (tests/validate.rs);
- tests/fixtures/gate/fixed-batch.onnx, the same interface with a fixed
  batch size of 1 ([1, 78]), which a package must not have, since the
  gateway runs rows in batches (tests/packages.rs);
- tests/fixtures/gate/zipmap.onnx, the same interface whose probabilities
  are also wrapped in a ZipMap (``output_probability``, a sequence of
  maps), as skl2onnx writes classifiers by default (tests/packages.rs).

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

OUT = Path(__file__).resolve().parent / "fixtures" / "gate"
FEATURES = 78


def write(name: str, batch: str | int, noisy: bool, zipmap: bool = False) -> None:
    weights = np.full((FEATURES, 2), 0.01, dtype=np.float32)
    weights[:, 1] = -0.01
    if noisy:
        nodes = [
            helper.make_node("MatMul", ["input", "weights"], ["logits"]),
            helper.make_node("RandomUniformLike", ["logits"], ["noise"], low=-1.0, high=1.0),
            helper.make_node("Add", ["logits", "noise"], ["noisy"]),
            helper.make_node("Softmax", ["noisy"], ["probabilities"], axis=1),
        ]
    else:
        nodes = [
            helper.make_node("MatMul", ["input", "weights"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ]
    outputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, 2])]
    opsets = [helper.make_opsetid("", 13)]
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probabilities"], ["output_probability"],
                                      domain="ai.onnx.ml", classlabels_int64s=[0, 1]))
        outputs = [helper.make_value_info(
            "output_probability",
            helper.make_sequence_type_proto(
                helper.make_map_type_proto(TensorProto.INT64,
                                           helper.make_tensor_type_proto(TensorProto.FLOAT, []))))]
        opsets.append(helper.make_opsetid("ai.onnx.ml", 3))
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, FEATURES])],
        outputs,
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name="tests/gate_fixtures.py")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    print(f"wrote {path}")


def main() -> int:
    write("noisy", "N", noisy=True)
    write("fixed-batch", 1, noisy=False)
    write("zipmap", "N", noisy=False, zipmap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
