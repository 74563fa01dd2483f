"""Seed-paper primitives (filled in by the family implementation)."""
