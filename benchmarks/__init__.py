"""Benchmarks: scripts that print a Markdown table comparing two things in one run (see README.md).

Run them as modules from the repository root, e.g. `python -m benchmarks.sampling`.
"""
