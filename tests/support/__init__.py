"""Helpers for the test fixtures in ``tests/conftest.py`` (real servers on loopback, databases)."""
