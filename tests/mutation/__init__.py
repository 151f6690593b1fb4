"""The mutation check: a curated list of bugs in the safety-critical lines (mutants.py) and a
runner (`python -m tests.mutation`, or bin/mutants) that proves the tests catch each one."""
