"""Benchmark suite comparing dbqueue with Celery, Procrastinate and PgQueuer.

Run it with ``python benchmarks/run.py``; see ``benchmarks/README.md``.
"""
