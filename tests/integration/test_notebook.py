"""examples/notebook.ipynb runs top to bottom in a headless Jupyter kernel started from this interpreter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(240)]

NOTEBOOK = Path(__file__).parents[2] / "examples" / "notebook.ipynb"
KERNEL = "meshcore-test"


@pytest.fixture
def kernel_from_this_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs ipykernel with this interpreter, whatever kernels the machine has."""
    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.delenv("MESHCORE_ROUTER_URL", raising=False)
    return KERNEL


def outputs(cell: Any, mime: str) -> str:
    return "".join(
        str(output.get("data", {}).get(mime, "")) + str(output.get("text", "") if mime == "stream" else "")
        for output in cell.get("outputs", [])
    )


def test_the_notebook_runs_headless_and_shows_the_swarm_failover(kernel_from_this_python: str, tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel_from_this_python, timeout=180, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    models, completion, live, final_view, events = code[1], code[2], code[3], code[4], code[5]
    assert "gemma-3-270m" in outputs(models, "text/html")
    assert "model: gemma-3-270m" in outputs(completion, "text/html")
    killed = outputs(live, "text/plain").split("'")[-2]  # the cell's value: the killed leader's node id
    assert killed in outputs(live, "text/html")  # the display, updated in place to its last state
    assert len(final_view["outputs"]) == 1  # the view alone, with no copy that rich displays on its own
    view = outputs(final_view, "text/plain")
    assert "failover at" in view and f"{killed} ->" in view and "failover" in outputs(final_view, "text/html")
    assert f"{killed}  lost" in view and "leader" in view and "released" in view
    assert "6, 7, 8, 9, 10, 11, 12, 13, 14, 15," in " ".join(view.replace("│", " ").split())
    printed = outputs(events, "stream")
    assert "leader_elected" in printed and "failover" in printed
