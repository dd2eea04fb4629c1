"""What ONNX Runtime alone costs per row of a model package, without Candor.

Each package's model runs in Python onnxruntime as the gateway configures
its sessions (one intra-op thread, spinning off), on the package's
background rows (varied rows: the same few rows repeated let the branch
predictor learn a tree ensemble and report a cost no caller sees), in
batches of 1, 8 and 64. Packages are timed in turns, round after round, so
that their figures share the machine's noise; the median of the rounds is
printed. It tells how much of a Score call the model itself takes
(BENCHMARKS.md, session 18).

Usage (the pinned training environment, models/requirements.txt):
    .venv-models/bin/python benches/ort_row_cost.py \
        models/caravan-lgbm/1.0.0 models/caravan-lgbm/1.1.0
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

BATCHES = (1, 8, 64)
ROUNDS = 3
SECONDS = 2.0


def session(package: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(package / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


def us_per_row(s: ort.InferenceSession, rows: np.ndarray, batch: int) -> float:
    name = s.get_inputs()[0].name
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        for at in range(0, len(rows) - batch + 1, batch):
            s.run(None, {name: rows[at : at + batch]})
            done += batch
    return (time.perf_counter() - started) / done * 1e6


def main(packages: list[Path]) -> None:
    models = {
        p: (
            session(p),
            np.loadtxt(p / "background.csv", delimiter=",", skiprows=1, dtype=np.float32),
        )
        for p in packages
    }
    figures: dict[tuple[Path, int], list[float]] = {}
    for _ in range(ROUNDS):
        for p, (s, rows) in models.items():
            for batch in BATCHES:
                figures.setdefault((p, batch), []).append(us_per_row(s, rows, batch))
    print(f"onnxruntime {ort.__version__}, one thread, median of {ROUNDS} rounds x {SECONDS:.0f} s")
    print("| package | background rows | " + " | ".join(f"µs/row at {b}" for b in BATCHES) + " |")
    print("|---|---|" + "---|" * len(BATCHES))
    for p, (_, rows) in models.items():
        cells = " | ".join(f"{statistics.median(figures[(p, b)]):.2f}" for b in BATCHES)
        print(f"| {p} | {len(rows)} | {cells} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main([Path(a) for a in sys.argv[1:]])
