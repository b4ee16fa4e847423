"""What a serving replica pays to start: imports, loading a model, the first prediction.

A Serve replica is a fresh Ray worker process that imports ``raysys.serving.server`` (to
unpickle the deployment class) and builds a :class:`LoadedModel` per served version. This
script times exactly that in fresh processes, one source tree at a time, and reports the
process's peak RSS and whether Lightning was imported. Compare two trees::

    git archive HEAD | tar -x -C /tmp/before        # the code before a change
    .venv/bin/python benchmarks/replica_bench.py --tree /tmp/before --tree . --runs 7

The model is the quickstart config's MLP with its features, fitted on 5,000 synthetic rows
with random weights (training would change nothing here: only the shapes matter).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs in the fresh process, against the tree on PYTHONPATH; uses only APIs both trees share.
REPLICA = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
import raysys.serving.server
from raysys.modeling.predict import LoadedModel
t1 = time.perf_counter()
folder = Path(sys.argv[1])
files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "rows.json"}
model = LoadedModel(files)
model.predict(json.loads((folder / "rows.json").read_text()))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_and_predict_s": t2 - t1,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "lightning": "lightning" in sys.modules, "modules": len(sys.modules)}))
"""


def write_model(folder: Path) -> None:
    """The quickstart's model files (random weights) and one raw row to predict."""
    from raysys.config import load_config
    from raysys.data import features, synthetic
    from raysys.modeling.artifacts import TrainSpec, state_dict_to_bytes
    from raysys.modeling.models import build_model, model_inputs, output_size
    from raysys.modeling.predict import model_files

    cfg = load_config(REPO / "configs" / "quickstart.yaml")
    source = cfg.data.source.model_copy(update={"rows": 5000})
    frame = synthetic.generate_rows(source, 0, 5000)
    types = {name: spec.type for name, spec in cfg.data.schema_.columns.items()}
    state = features.fit(features.plan_features(cfg.features, types, cfg.data.label), frame)
    inputs = model_inputs(state)
    network = build_model(cfg.model, inputs, output_size("binary"))
    spec = TrainSpec(model=cfg.model.model_dump(), train=cfg.train.model_dump(), inputs=inputs.to_dict(),
                     task="binary", label=cfg.data.label, classes=[0, 1])
    for name, data in model_files(spec, state, state_dict_to_bytes(network.state_dict())).items():
        (folder / name).write_bytes(data)
    row = frame[state.input_columns].head(1)
    (folder / "rows.json").write_text(json.dumps(row.to_dict(orient="list"), default=str))


def measure(tree: Path, folder: Path) -> dict:
    """One fresh replica-like process on ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", REPLICA, str(folder)], env=env, cwd=tree,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Measure each tree ``--runs`` times, interleaved, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="source tree (repeatable; default: this one)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.tree or [REPO]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_model(folder)
        samples: dict[Path, list[dict]] = {tree: [] for tree in trees}
        for _ in range(args.runs):
            for tree in trees:  # interleaved, so a busy spell on the machine hits every tree alike
                samples[tree].append(measure(tree, folder))
    for tree, runs in samples.items():
        summary = {key: round(statistics.median(run[key] for run in runs), 3)
                   for key in ("import_s", "load_and_predict_s", "peak_rss_mib", "modules")}
        summary["lightning"] = any(run["lightning"] for run in runs)
        print(json.dumps({"tree": str(tree), "runs": len(runs), **summary}))


if __name__ == "__main__":
    main()
