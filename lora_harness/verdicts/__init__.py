"""Verdicts: everything that turns scores into pass / fail / inconclusive / incomplete.

One rule decides every gate test (`outcome.decide`); the tests, the terminal table, `run.json` and
`report.html` all call it, so they can never disagree. The intervals (`stats`) are chosen per metric kind
and checked by simulation (`benchmarks/verdict_stability.py`).
"""
