"""The wall time of one rollout move (canary, promote, rollback), from the CLI and from Python.

A move computes a new traffic plan, hands it to the running replicas (Serve ``user_config``,
applied in place), moves the registry aliases and writes an audit event. From the CLI it also
pays for starting Python, importing raysys and connecting to the Ray cluster; from Python
(``System.serving``, what the monitor calls) the process is already connected.

For each source tree (``--tree``, default this one) the script copies one trained model into a
fresh storage root, starts the model server with that tree's ``raysys serve up`` (its own
local Ray head), times ``--rounds`` rounds of the three moves as CLI commands in fresh
processes (``raysys deploy --canary``, ``raysys deploy --blue-green`` as the promotion,
``raysys rollback``) and the same moves through the Python API in one connected process, then
takes the server down. Compare two trees::

    git archive HEAD | tar -x -C /tmp/before        # the code before a change
    .venv/bin/python benchmarks/rollout_bench.py --tree /tmp/before --tree . --rounds 3

The model is the quickstart config's MLP with its fitted features and random weights, registered
twice (v1, v2): training would change nothing here, a move loads at most one new version per
replica.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RAYSYS = Path(sys.executable).with_name("raysys")
CLI_MOVES = {"canary": ["deploy", "--model", "2", "--canary", "10"],
             "promote": ["deploy", "--model", "2", "--blue-green"],
             "rollback": ["rollback", "--to", "1"]}

# Runs in a fresh process against the tree on PYTHONPATH: the same moves through System.serving.
API_MOVES = r"""
import json, sys, time
from raysys import System
rs = System.from_config(sys.argv[1])
rs.serving.status()  # connect first: the monitor's process is connected when it moves
times = {"canary": [], "promote": [], "rollback": []}
for _ in range(int(sys.argv[2])):
    for move, call in (("canary", lambda: rs.serving.deploy("2", "canary", percent=10)),
                       ("promote", rs.serving.promote), ("rollback", lambda: rs.serving.rollback(to="1"))):
        started = time.perf_counter()
        call()
        times[move].append(time.perf_counter() - started)
print(json.dumps(times))
"""


def config(root: Path) -> dict:
    """The quickstart config, served on a free port with one small replica, its state under ``root``."""
    from raysys.runtime import free_port

    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    return {**cfg, "storage": {"root": str(root)}, "tracking": {"wandb": False},
            "serve": {"port": free_port(), "num_cpus": 0.2, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}}


def run(tree: Path, args: list[str], cfg: Path, env: dict[str, str]) -> tuple[float, dict]:
    """One CLI command in a fresh process: its wall time and its JSON answer."""
    started = time.perf_counter()
    done = subprocess.run([str(RAYSYS), *args, "-c", str(cfg), "--json"], check=False, capture_output=True,
                          text=True, env={**env, "PYTHONPATH": str(tree)}, cwd=tree, timeout=600)
    elapsed = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"raysys {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, json.loads(lines[-1])


def registered_model(work: Path) -> Path:
    """A storage root whose registry holds the model as v1 (the champion) and v2."""
    from replica_bench import write_model

    from raysys import System
    from raysys.config import parse_config

    folder, root = work / "files", work / "model"
    folder.mkdir()
    write_model(folder)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "rows.json"}
    rs = System(parse_config(config(root)))
    for _ in range(2):
        rs.models.registry.register(rs.models.name, files, metrics={}, lineage={}, params={}, run_id=None,
                                    description="random weights for the rollout benchmark")
    rs.models.registry.set_alias(rs.models.name, "champion", 1, actor="bench", reason="rollout benchmark")
    return root


def measure(tree: Path, model_root: Path, work: Path, rounds: int, env: dict[str, str]) -> dict:
    """Serve the model with ``tree``'s code and time each move from the CLI and from Python."""
    root = work / f"store-{abs(hash(str(tree)))}"
    shutil.copytree(model_root, root)
    cfg = work / f"{root.name}.yaml"
    cfg.write_text(yaml.safe_dump(config(root)))
    run(tree, ["serve", "up"], cfg, env)
    try:
        cli: dict[str, list[float]] = {move: [] for move in CLI_MOVES}
        for _ in range(rounds):
            for move, args in CLI_MOVES.items():
                elapsed, answer = run(tree, args, cfg, env)
                if not answer.get("applied_to_running_app"):
                    raise SystemExit(f"{move}: not applied to the running app: {answer}")
                cli[move].append(elapsed)
        done = subprocess.run([sys.executable, "-c", API_MOVES, str(cfg), str(rounds)], check=False,
                              capture_output=True, text=True, env={**env, "PYTHONPATH": str(tree)}, cwd=tree,
                              timeout=600)
        if done.returncode != 0:
            raise SystemExit(f"API moves failed: {done.stderr[-2000:]}")
        api = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        run(tree, ["serve", "down"], cfg, env)
    return {"cli": cli, "api": api}


def main() -> None:
    """Time the moves for each tree and print a table of medians (and one JSON line per tree)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="source tree (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of canary → promote → rollback")
    args = parser.parse_args()
    trees = [t.resolve() for t in (args.tree or [REPO])]
    home = Path(tempfile.mkdtemp(prefix="rollout-bench-home-"))
    env = {"HOME": str(home), "PATH": f"{RAYSYS.parent}:/usr/bin:/bin", "LANG": "C.UTF-8",
           "WANDB_MODE": "offline"}  # a user's shell: no RAY_* of this process
    with tempfile.TemporaryDirectory(prefix="rollout-bench-") as folder:
        work = Path(folder)
        model_root = registered_model(work)
        results = {str(tree): measure(tree, model_root, work, args.rounds, env) for tree in trees}
    shutil.rmtree(home, ignore_errors=True)
    print(f"{'tree':<40} {'move':<9} {'CLI s (median)':>15} {'Python API s (median)':>22}")
    for tree, result in results.items():
        for move in CLI_MOVES:
            print(f"{tree[-40:]:<40} {move:<9} {statistics.median(result['cli'][move]):>15.2f} "
                  f"{statistics.median(result['api'][move]):>22.2f}")
    for tree, result in results.items():
        print(json.dumps({"tree": tree, "rounds": args.rounds, "cpus": os.cpu_count(), **result}))


if __name__ == "__main__":
    main()
