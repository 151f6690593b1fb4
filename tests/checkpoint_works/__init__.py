"""Handlers for the checkpoint tests: each counts from its slot's checkpoint and commits."""
