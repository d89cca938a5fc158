"""`citus-pipeline bench seed`: the reference experiment at its own scale (28,276,228 rows by
default), and side by side with what users would pick instead.

Sections, in this order (each can run alone with `--section`; a section that needs data the
earlier ones leave behind loads it first), each a module here:

- stages: the main Dagster job (`pipeline run`) on the dedicated bench cluster from nothing,
  each stage timed next to the reference deployment's figure; the reference query timed
  right after each stage (first call) and settled (autovacuum done, a checkpoint, one warm-up
  call, then the median of `--runs`): what a user sees a minute later. Memory of the loader
  (this process) and of every member sampled over the whole job.
- peers: the four timing queries on chDB and DuckDB (each loading the same file into its own
  storage) next to `uk_price`, its rollup and the reference schema's table on the cluster.
- rebalance: the third worker group drained, then filled again by the background rebalance
  with a single-row writer running (moves, MB, MB/s, failed writes, rows lost), once with the
  spec's parallel moves and once with one move per node at a time.
- loaders: the five ways of `bench.loaders` on the same file.

``context`` holds what a run shares (the cluster, the file, the figures), ``plot`` draws them
and ``run`` runs the chosen sections. Raw output under `bench-results/seed-<rows>.{txt,json,
png}`; `--json` prints the figures as one object. Figures and ratios, never asserts.
"""

from __future__ import annotations

from .context import RESULTS, SECTIONS, seed_spec
from .run import run_seed

__all__ = ["RESULTS", "SECTIONS", "run_seed", "seed_spec"]
