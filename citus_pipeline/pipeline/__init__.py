"""The main job run from nothing (``run``) and what it reports (``report``).

Above the Dagster definitions, below the CLI and the benchmarks, which both run it: the
command line as `pipeline run`, `bench seed` as its first section.
"""
