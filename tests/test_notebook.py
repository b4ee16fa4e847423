"""notebooks/quickstart.ipynb: committed clean, and run top to bottom in a real Jupyter kernel.

The kernel is a new user's (``tests/user_shell.py``: no ``RAY_*``, a temporary ``HOME``), so the
notebook starts its own local Ray, as it would on a laptop, and its last cell stops everything.
The test appends nothing to the notebook's steps: it inserts one cell before the clean-up that
prints what the steps produced as JSON, and checks that afterwards no process the kernel started
is left and the temporary storage root is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from tests.user_shell import clean_env

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
FACTS = """import json
print(json.dumps({
    "root": config.storage.root, "status": {k: status[k] for k in ("running", "windows")},
    "windows": windows.reset_index().to_dict("records"), "alerts": [a["rule"] for a in rs.monitor.alerts()],
    "card": card.markdown, "runs": rs.models.runs(), "model": rs.models.show("champion").to_dict(),
    "html": {"dataset": ingested.manifest._repr_html_(), "model": rs.models.show("champion")._repr_html_(),
             "monitor": status._repr_html_()}}, default=str))"""


def code_cells(notebook) -> list[str]:
    return [cell.source for cell in notebook.cells if cell.cell_type == "code"]


def test_quickstart_notebook_is_clean():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in notebook.cells) >= len(code) // 2
    source = "\n".join(code_cells(notebook))
    assert "tempfile.mkdtemp" in source and "./.raysys" not in source
    for step in ("rs.data.ingest()", "rs.models.train()", "rs.models.evaluate(", "rs.serving.up()", "/v1/predict",
                 "/v1/feedback", "rs.monitor.status()", "rs.monitor.windows()", "rs.monitor.audit()", "rs.card(",
                 "rs.serving.down()", "stop_local_ray()"):
        assert step in source, step


def kernel_family(pid: int) -> dict[tuple[int, float], psutil.Process]:
    """The kernel, every process under it, and every process of its session (a setsid'd kernel leads one)."""
    kernel = psutil.Process(pid)
    found = [kernel, *kernel.children(recursive=True)]
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if process.pid != pid and os.getsid(process.pid) == pid:
                found.append(process)
    return {(p.pid, p.create_time()): p for p in found if p.is_running()}


def alive(processes) -> list[str]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid}: {' '.join(process.cmdline())[:200]}")
        except psutil.Error:
            continue
    return left


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quickstart_notebook_runs_top_to_bottom_and_leaves_nothing_behind(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cleanup = max(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    notebook.cells.insert(cleanup, nbformat.v4.new_code_cell(FACTS))
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    family: dict = {}
    facts, root_left = None, False
    try:
        with client.setup_kernel(env=clean_env(tmp_path / "home")):
            kernel = client.km.provisioner.pid
            for index, cell in enumerate(notebook.cells):
                family |= kernel_family(kernel)
                client.execute_cell(cell, index)
                if cell.source == FACTS:
                    facts = json.loads(next(o["text"] for o in cell.outputs if o.get("name") == "stdout"))
    finally:
        root_left = facts is not None and Path(facts["root"]).exists()
        if root_left:
            shutil.rmtree(facts["root"], ignore_errors=True)
    _, left = psutil.wait_procs(list(family.values()), timeout=60)
    assert len(family) > 5 and not alive(left), alive(left)  # Ray's processes were there, and all stopped
    assert not root_left  # the last cell removed the storage root

    name, version = facts["model"]["name"], facts["model"]["version"]
    assert "champion" in facts["model"]["aliases"]
    windows = facts["windows"]
    assert facts["status"]["running"] and facts["status"]["windows"] == len(windows) >= 8
    assert any(w["drifted"] for w in windows[4:]) and "drift" in facts["alerts"]  # the drifted half

    card = facts["card"]
    assert card.startswith(f"# Model card: {name} v{version}") and "A tour of raysys" in card
    assert f"{len(windows)} monitor windows" in card and "| serve.up |" in card
    tag = f"model:{name}:v{version}"
    kinds = {r["kind"] for r in facts["runs"] if tag in r["tags"]}
    assert {"train", "evaluate", "monitor"} <= kinds  # one W&B tag from training to production

    html = facts["html"]
    assert facts["model"]["lineage"]["dataset_version"] in html["dataset"] and "rows accepted" in html["dataset"]
    assert f"Model {name} v{version}" in html["model"] and "champion" in html["model"]
    assert "Monitor of app" in html["monitor"] and "<td" in html["monitor"]
