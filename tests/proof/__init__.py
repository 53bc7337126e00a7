"""Tests of the pure proof-of-compute core (meshcore_sdk.proof)."""
