"""Analyses beyond one score per image: judge agreement with people, the reference-photo audit, diversity."""
