"""Scores Candor through the Open Inference Protocol with the official,
unmodified Triton client (tritonclient[grpc], pinned in requirements.txt).

Run by tests/oip.rs against a real server:
    python client.py HOST:PORT PACKAGE_DIR
PACKAGE_DIR is the caravan-lgbm package whose golden rows are scored. Any
failed check raises, so the exit status is non-zero.
"""

import csv
import hashlib
import json
import math
import sys
import uuid

import numpy as np
import tritonclient.grpc as grpcclient

MODEL = "caravan-lgbm"
ROWS = 3


def golden(package):
    with open(f"{package}/golden.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:ROWS]
    columns = [c for c in rows[0] if c != "score"]
    features = np.array([[float(r[c]) for c in columns] for r in rows], dtype=np.float32)
    scores = [float(r["score"]) for r in rows]
    return features, scores


def main(url, package):
    client = grpcclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "server not live"
    assert client.is_server_ready(), "server not ready"
    assert client.is_model_ready(MODEL), "model not ready"

    features, scores = golden(package)
    metadata = client.get_model_metadata(MODEL)
    assert metadata.name == MODEL, metadata
    assert "1.0.0" in metadata.versions, metadata
    [model_input] = metadata.inputs
    assert model_input.datatype == "FP32", model_input
    assert list(model_input.shape) == [-1, features.shape[1]], model_input
    outputs = {o.name: o for o in metadata.outputs}
    assert list(outputs["attributions"].shape) == [-1, features.shape[1]], outputs
    assert outputs["decision_id"].datatype == "BYTES", outputs

    tensor = grpcclient.InferInput(model_input.name, list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)  # raw_input_contents, the client's default
    requested = [grpcclient.InferRequestedOutput(n) for n in outputs]
    result = client.infer(
        MODEL,
        [tensor],
        model_version="1.0.0",
        outputs=requested,
        parameters={
            "subject_id": "oip-client",
            "jurisdiction_country": "US",
            "age_status": "adult",
            "explain_mode": "inline",
        },
    )
    response = result.get_response()
    assert response.model_version == "1.0.0", response.model_version
    parameters = response.parameters
    assert parameters["tier"].string_param == "personalised", parameters
    assert parameters["explanation_status"].string_param == "inline", parameters
    provenance = json.loads(parameters["provenance"].string_param)
    assert provenance["tier"] == "personalised", provenance
    assert provenance["jurisdiction"] == "US", provenance
    with open(f"{package}/model.onnx", "rb") as f:
        assert provenance["model_sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert provenance["policy_version"], provenance
    assert provenance["ledger_records"], provenance

    got = result.as_numpy("score")
    assert got.shape == (ROWS,), got.shape
    for g, want in zip(got, scores):
        assert abs(g - want) <= 1e-6, (g, want)
    ids = result.as_numpy("decision_id")
    assert len({uuid.UUID(i.decode()) for i in ids}) == ROWS, ids

    attributions = result.as_numpy("attributions")
    base = result.as_numpy("base_value")
    assert attributions.shape == features.shape, attributions.shape
    space = result.get_output("attributions").parameters["output_space"].string_param
    assert space == "log_odds", space
    for phi, b, score in zip(attributions, base, got):
        # The attributions add up to the margin whose logistic is the score.
        margin = b + phi.sum()
        assert abs(1 / (1 + math.exp(-margin)) - score) <= 1e-5, (margin, score)
        assert np.count_nonzero(phi) > 0, phi
    print(f"oip client: {ROWS} rows scored, tier personalised, attributions additive")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
