"""`python -m citus_pipeline.cli ...`: the tests run the CLI this way, in a fresh interpreter."""

from . import main

main()
