"""The protocol package is pure: no I/O library, no clock or randomness, nothing else from the SDK.

STYLE.md: the protocol imports only the standard library and pydantic, so the SDK, the
node and the router can all share it.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import meshcore_sdk.protocol

PROTOCOL_DIR = Path(meshcore_sdk.protocol.__file__).parent
PACKAGE = "meshcore_sdk.protocol"
IO_LIBRARIES = (
    "asyncio",
    "httpx",
    "websockets",
    "aiortc",
    "llama_cpp",
    "libtorrent",
    "wasmtime",
    "fastapi",
    "uvicorn",
    "anyio",
)
# A core takes ``now``, ``rng`` and ids as arguments (STYLE.md rule 1).
IMPURE_STDLIB = ("time", "random", "uuid", "socket", "asyncio")
OTHER_PACKAGES = ("meshcore_sdk", "meshcore_node", "meshcore_router")


def test_importing_the_protocol_loads_no_io_library() -> None:
    """A fresh interpreter that imports only the protocol has none of the I/O libraries loaded."""
    probe = (
        "import json, sys\n"
        "import meshcore_sdk.protocol\n"
        f"print(json.dumps(sorted(name for name in {IO_LIBRARIES!r} if name in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, check=False, timeout=120
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == []


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _runtime_imports(tree: ast.Module, module: str) -> list[str]:
    """Absolute names of everything ``tree`` imports at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    names: list[str] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if _is_type_checking_block(node):
            assert isinstance(node, ast.If)
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.rsplit(".", node.level)[0]
                base = f"{parent}.{base}" if base else parent
            names.extend(f"{base}.{alias.name}" for alias in node.names)
        pending.extend(ast.iter_child_nodes(node))
    return names


def _forbidden(name: str) -> bool:
    root = name.split(".")[0]
    if name == PACKAGE or name.startswith(f"{PACKAGE}."):
        return False
    return root in OTHER_PACKAGES or root in IMPURE_STDLIB or root in IO_LIBRARIES


def test_protocol_modules_import_nothing_impure() -> None:
    """No protocol module imports the rest of Meshcore, an I/O library, or a clock, RNG, id or socket module."""
    offenders = []
    for path in sorted(PROTOCOL_DIR.glob("*.py")):
        module = f"{PACKAGE}.{path.stem}"  # __init__ too: a relative import resolves against its package
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        offenders.extend(f"{path.name}: {name}" for name in _runtime_imports(tree, module) if _forbidden(name))

    assert offenders == []


def test_the_import_scan_sees_what_it_must_refuse() -> None:
    """The scan catches absolute, dotted and relative imports that leave the package, and skips type-only ones."""
    source = (
        "import time\n"
        "import asyncio.tasks\n"
        "from meshcore_sdk import client\n"
        "from .. import transport\n"
        "from . import frames\n"
        "from meshcore_sdk.protocol.errors import MeshError\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import random\n"
        "def later():\n"
        "    import uuid\n"
    )
    names = _runtime_imports(ast.parse(source), f"{PACKAGE}.backoff")

    assert sorted(name for name in names if _forbidden(name)) == [
        "asyncio.tasks",
        "meshcore_sdk.client",
        "meshcore_sdk.transport",
        "time",
        "uuid",
    ]
