"""Node tests run llama.cpp in this process too: its idle threads must sleep, not spin (docs/engine.md)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
