"""``python -m meshcore_router``: the ``meshcore router`` command on its own.

Options also come from ``MESHCORE_ROUTER_*`` environment variables (``MESHCORE_ROUTER_PORT``).
"""

from meshcore_router.cli import router_command

router_command(prog_name="python -m meshcore_router", auto_envvar_prefix="MESHCORE_ROUTER")
