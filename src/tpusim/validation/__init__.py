"""Checking the timing model against published measurements."""
