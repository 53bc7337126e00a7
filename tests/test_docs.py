"""The documentation site builds cleanly: ``mkdocs build --strict`` fails on any warning or broken link."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")

ROOT = Path(__file__).parents[1]


@pytest.mark.timeout(180)
def test_the_docs_build_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "openapi.json").is_file()
    router_api = (site / "router-api" / "index.html").read_text()
    assert "/v1/chat/completions" in router_api
    assert "meshcore node" in (site / "cli" / "index.html").read_text()
    assert "ChatMeshcore" in (site / "examples" / "index.html").read_text()
