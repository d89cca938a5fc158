"""Dagster definitions for the Price Paid data on Citus: resources, assets, checks, automation."""
