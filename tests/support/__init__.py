"""Helpers that start and drive real services for the test suite."""
