"""A serving replica imports torch to predict, never Lightning (nor Ray Train or Tune).

No Ray here: the model files are built in-process from a fitted feature state and a fresh
network, then a fresh interpreter does what a replica does (import the server module, load the
model, predict) and reports what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from raysys.config import FeaturesConfig, ModelConfig
from raysys.data import features
from raysys.modeling.artifacts import TrainSpec, state_dict_to_bytes
from raysys.modeling.models import build_model, model_inputs, output_size
from raysys.modeling.predict import LoadedModel, model_files

HEAVY = ("lightning", "pytorch_lightning", "lightning_fabric", "torchmetrics", "ray.train", "ray.tune")

REPLICA = """
import json, sys
from pathlib import Path
import raysys.serving.server
from raysys.modeling.predict import LoadedModel
from raysys.modeling.registry import read_artifacts  # a replica reads its versions' files with it
folder = Path(sys.argv[1])
model = LoadedModel({p.name: p.read_bytes() for p in folder.iterdir()})
output = model.predict({"x": [0.5, -1.0], "plan": ["basic", "new"]})
heavy = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in sys.argv[2:]))
print(json.dumps({"heavy": heavy, "torch": "torch" in sys.modules, "output": output.tolist()}))
"""


def small_model_files() -> dict[str, bytes]:
    """A binary model over one numeric and one categorical column (random weights)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=50), "plan": rng.choice(["basic", "premium"], 50),
                          "y": rng.integers(0, 2, 50)})
    state = features.fit(features.plan_features(FeaturesConfig(), {"x": "float", "plan": "category", "y": "int"},
                                                "y"), frame)
    inputs, model = model_inputs(state), ModelConfig(hidden=[4])
    network = build_model(model, inputs, output_size("binary"))
    spec = TrainSpec(model=model.model_dump(), train={}, inputs=inputs.to_dict(), task="binary", label="y",
                     classes=[0, 1])
    return model_files(spec, state, state_dict_to_bytes(network.state_dict()))


def test_a_replica_loads_and_predicts_without_lightning(tmp_path):
    files = small_model_files()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run([sys.executable, "-c", REPLICA, str(tmp_path), *HEAVY], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [] and report["torch"]
    expected = LoadedModel(files).predict({"x": [0.5, -1.0], "plan": ["basic", "new"]})
    assert np.allclose(report["output"], expected) and all(0.0 < p < 1.0 for p in report["output"])
