"""Benchmarks for asr-engine (run from the repository root: `python -m bench SUBCOMMAND`; not installed)."""
