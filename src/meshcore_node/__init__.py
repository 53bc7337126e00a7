"""Meshcore worker daemon."""
