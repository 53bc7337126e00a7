"""Swarm mode: one prompt to several workers, one smooth stream to the application."""
