"""Meshcore router: the thin control plane.

::

    from meshcore_router import RouterConfig, create_app, serve

    app = create_app(RouterConfig(port=8080))          # an ASGI app for any server
    await serve(RouterConfig(port=0), ready=print)      # or run it here; prints the bound URL

The router registers nodes over their control links (``/mesh/v1/node``), checks
their liveness, picks a node per request, and speaks the OpenAI HTTP API under
``/v1`` plus a frame stream for clients at ``/mesh/v1/stream``.  The wire protocol
is ``docs/protocol.md``.
"""

from meshcore_router.app import create_app
from meshcore_router.config import RouterConfig
from meshcore_router.server import serve

__all__ = ["RouterConfig", "create_app", "serve"]
