"""Build ids: what a receipt says about the software and the kernels that computed it.

A build id is a ``;``-separated list of ``key=value`` fields, for example::

    class=cpu-x86-avx2;llama-cpp-python=0.3.36;extra_bufts=0;system=CPU : SSE3 = 1 | AVX2 = 1 | ...

``class`` is the **build class** that exact replay (Tier A) needs to share with the
worker: the backend and the widest SIMD level llama.cpp reports, which pick the kernels.
The other fields are recorded so that a mismatch can be explained; the router's
allow-list matches on the class and the ``llama-cpp-python`` version.
"""

from __future__ import annotations

from typing import Final

__all__ = ["build_class", "build_fields", "format_build_id", "simd_class"]

_SIMD_LEVELS: Final = (("AVX512", "avx512"), ("AVX2", "avx2"), ("AVX", "avx"), ("NEON", "neon"))


def simd_class(system_info: str) -> str:
    """The build class of a CPU build from ``llama_print_system_info()`` (``cpu-<arch>-<level>``)."""
    flags = {part.split("=")[0].strip() for part in system_info.split("|") if part.strip().endswith("= 1")}
    flags = {flag.removeprefix("CPU : ").strip() for flag in flags}
    for flag, name in _SIMD_LEVELS:
        if flag in flags:
            arch = "arm" if name == "neon" else "x86"
            return f"cpu-{arch}-{name}"
    return "cpu-generic"


def format_build_id(*, version: str, system_info: str, extra_bufts: bool) -> str:
    """The build id of a CPU engine (see the module docstring)."""
    system = " ".join(system_info.replace(";", ",").split())
    return f"class={simd_class(system_info)};llama-cpp-python={version};extra_bufts={int(extra_bufts)};system={system}"


def build_fields(build_id: str) -> dict[str, str]:
    """The fields of a build id (unknown text without ``=`` is ignored)."""
    fields: dict[str, str] = {}
    for part in build_id.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def build_class(build_id: str) -> str:
    """The build class a build id names (``unknown`` when it names none)."""
    return build_fields(build_id).get("class", "unknown")
