"""Meshcore router: the thin control plane."""
