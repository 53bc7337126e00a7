"""Meshcore SDK."""
