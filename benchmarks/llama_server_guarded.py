"""``python -m llama_cpp.server`` with Meshcore's AMX guard: the baseline server of ``benchmarks/engine.py``.

llama-cpp-python's server loads its model through ``Llama``, which takes no ``use_extra_bufts``; this
launcher wraps ``llama_model_default_params`` for the whole run (``meshcore_node.engine.guard``), so the
baseline neither crashes on AMX CPUs nor differs from the engine in its kernels.  Arguments are the server's::

    .venv/bin/python benchmarks/llama_server_guarded.py --model M.gguf --interrupt_requests False --port 8011
"""

from __future__ import annotations

from meshcore_node.engine.guard import guarded_model_params, needs_amx_guard


def main() -> None:
    """Run the server with the guard decided for this CPU."""
    from llama_cpp.server.__main__ import main as server_main

    with guarded_model_params(needs_amx_guard()):
        server_main()


if __name__ == "__main__":
    main()
