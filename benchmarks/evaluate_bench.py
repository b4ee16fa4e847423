"""Evaluating a model on a split: raysys (Ray Data tasks) vs a one-actor pool vs plain pandas.

The same model files (the quickstart's MLP and features, random weights: only the work matters)
are scored on the test split of a synthetic churn version of ``--rows`` rows, three ways, each
run ``--repeats`` times in one process on one local Ray (2 CPUs), interleaved:

* **raysys**: ``System.models.evaluate_files`` (transform → ``predict_batch`` in Ray Data tasks →
  ``to_pandas`` → metrics, baseline and slices);
* **one actor**: the same pipeline with ``BatchPredictor`` in ``ActorPoolStrategy(size=1)``,
  which is how raysys evaluated before;
* **pandas**: the split read into the driver, ``LoadedModel.predict_features`` on the transformed
  frame, and the same ``score_frame``.

Prints seconds per evaluation (first run, then the median of the rest)::

    .venv/bin/python benchmarks/evaluate_bench.py [--rows 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from replica_bench import write_model  # the quickstart's model files

REPO = Path(__file__).resolve().parents[1]


def system(rows: int, root: str):
    """A System on the quickstart config with ``rows`` synthetic rows, ingested."""
    import yaml

    from raysys import System

    data = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    data["data"]["source"]["rows"] = rows
    data.update(storage={"root": root}, ray={"num_cpus": 2}, tracking={"wandb": False})
    path = Path(root).parent / "raysys.yaml"
    path.write_text(yaml.safe_dump(data))
    rs = System.from_config(path)
    rs.data.ingest()
    return rs


def one_actor(rs, files: dict, ref: str) -> dict:
    """The previous evaluation: one ``BatchPredictor`` actor for the whole split."""
    from ray.data import ActorPoolStrategy

    from raysys.data.service import FeatureArtifact
    from raysys.modeling.predict import BatchPredictor, LoadedModel
    from raysys.modeling.service import score_frame

    model = LoadedModel(files)
    keep = [model.spec.label, *rs.config.evaluate.slices]
    dataset = rs.data.transform(FeatureArtifact(model.state, rs.data.name, ref, {}), ref=ref, split="test", keep=keep)
    frame = dataset.map_batches(BatchPredictor, fn_constructor_kwargs={"files": files, "keep": keep},
                                batch_format="pandas", compute=ActorPoolStrategy(size=1), num_cpus=0.25).to_pandas()
    return score_frame(frame, model.spec, list(rs.config.evaluate.slices), rs.models._train_labels(
        FeatureArtifact(model.state, rs.data.name, ref, {}), model.spec))


def in_pandas(rs, files: dict, ref: str) -> dict:
    """The split in the driver, predicted in one call."""
    from raysys.data import features
    from raysys.data.service import FeatureArtifact
    from raysys.modeling.predict import BatchPredictor, LoadedModel
    from raysys.modeling.service import score_frame

    model = LoadedModel(files)
    keep = [model.spec.label, *rs.config.evaluate.slices]
    raw = rs.data.read(ref, split="test").to_pandas()
    out = features.transform(model.state, raw)
    for column in keep:
        out[features.kept_name(column) if column in out else column] = raw[column].to_numpy()
    frame = BatchPredictor(files, keep)(out)
    return score_frame(frame, model.spec, list(rs.config.evaluate.slices), rs.models._train_labels(
        FeatureArtifact(model.state, rs.data.name, ref, {}), model.spec))


def main() -> None:
    """Time each way ``--repeats`` times and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp, "model")
        model_dir.mkdir()
        write_model(model_dir)
        files = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.name != "rows.json"}
        rs = system(args.rows, str(Path(tmp, "store")))
        ref = rs.data.show().version
        ways = {"raysys (tasks)": lambda: rs.models.evaluate_files(files, ref, "test"),
                "one actor (before)": lambda: one_actor(rs, files, ref),
                "pandas (driver)": lambda: in_pandas(rs, files, ref)}
        times: dict[str, list[float]] = {name: [] for name in ways}
        metrics = {}
        for _ in range(args.repeats):
            for name, work in ways.items():
                started = time.perf_counter()
                metrics[name] = work()["metrics"]
                times[name].append(time.perf_counter() - started)
                print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr)
    rows = metrics["pandas (driver)"]["n"]
    assert all(m["n"] == rows for m in metrics.values()), metrics  # the same rows scored every way
    base = statistics.median(times["pandas (driver)"][1:] or times["pandas (driver)"])
    print(f"\n{args.rows:,} rows, test split {rows:,} rows, {args.repeats} runs each\n")
    print("| way | first run | median of the rest | ratio to pandas (median) |")
    print("|---|---|---|---|")
    for name, spent in times.items():
        rest = statistics.median(spent[1:] or spent)
        print(f"| {name} | {spent[0]:.2f} s | {rest:.2f} s | {rest / base:.2f}x |")


if __name__ == "__main__":
    main()
