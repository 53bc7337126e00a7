"""Loading a GGUF through llama-cpp-python with the AMX guard.

llama.cpp's AMX matmul kernels crash at the first inference on some Xeon CPUs
(llama.cpp issue #20824; see DEVELOPERS.md).  Loading the model with
``use_extra_bufts=False`` keeps llama.cpp off those kernels.  The guard is
decided at run time from the CPU's flags, whatever flags the wheel was built
with, and every model load in Meshcore goes through :func:`load_llama`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["cpu_has_amx", "guarded_model_params", "load_llama", "needs_amx_guard"]

_CPUINFO = Path("/proc/cpuinfo")


def cpu_has_amx(cpuinfo: str) -> bool:
    """Whether ``/proc/cpuinfo`` text lists an AMX tile unit."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return "amx_tile" in line.split()
    return False


def needs_amx_guard(override: bool | None = None) -> bool:
    """Whether models must load with ``use_extra_bufts=False`` on this machine."""
    if override is not None:
        return override
    try:
        return cpu_has_amx(_CPUINFO.read_text())
    except OSError:
        return True  # unknown CPU: the guard costs a little speed, the crash costs the process


@contextlib.contextmanager
def guarded_model_params(enabled: bool) -> Iterator[None]:
    """Make llama-cpp-python's default model params carry the guard while loading.

    ``Llama`` takes no argument for ``use_extra_bufts``; it starts from
    ``llama_model_default_params()``, so that function is wrapped for the load.
    """
    from llama_cpp import llama_cpp as native

    original = native.llama_model_default_params

    def default_params() -> Any:
        params = original()
        params.use_extra_bufts = not enabled
        return params

    native.llama_model_default_params = default_params
    try:
        yield
    finally:
        native.llama_model_default_params = original


def load_llama(
    model_path: str | Path,
    *,
    n_ctx: int,
    n_threads: int | None = None,
    n_batch: int = 512,
    guard: bool | None = None,
) -> Llama:
    """Load a GGUF with the AMX guard decided for this CPU.

    Args:
        model_path: the GGUF file.
        n_ctx: context size in tokens.
        n_threads: generation threads (None: llama.cpp's default).
        n_batch: prompt tokens per batch.
        guard: force the guard on or off; None decides from the CPU.
    """
    from llama_cpp import Llama

    with guarded_model_params(needs_amx_guard(guard)):
        return Llama(
            model_path=str(model_path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_batch=n_batch,
            verbose=False,
        )
