"""Direct mode: tokens straight from a worker over a WebRTC data channel (``docs/protocol.md`` §8).

Importing this package loads aiortc (the ``direct`` extra); the client does so only
when ``mode="direct"`` is asked for.
"""
