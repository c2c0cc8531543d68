"""thresher's benchmark suite: `python -m benchmarks` measures, prints tables, writes docs/performance.md.

Every number is a ratio against a baseline measured in the same run on the same machine (a
plain-loop floor, an in-memory ceiling, curl), so results compare across machines and code
changes. Inputs are full-size synthetic archives in the real published layouts, generated on
the fly into a temporary directory and removed at the end. Nothing here asserts on timings:
a missed target is reported, with by how much, never raised.
"""
