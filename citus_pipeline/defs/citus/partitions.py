"""Partitions of the Price Paid data: one per month of HM Land Registry's monthly update file."""

from __future__ import annotations

import dagster as dg

# The dataset starts on 1 January 1995; each month's update file (A/C/D) is one partition.
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date="1995-01-01")


def partition_month(partition_key: str) -> str:
    """'2024-03-01' -> '2024-03' (the month in the update file's name)."""
    return partition_key[:7]


__all__ = ["monthly_partitions", "partition_month"]
