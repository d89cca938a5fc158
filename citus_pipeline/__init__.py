"""citus-pipeline: the UK Price Paid dataset on a highly-available Citus cluster, run by Dagster."""

__version__ = "0.1.0"
