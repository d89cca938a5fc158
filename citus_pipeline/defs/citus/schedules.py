"""Schedules: the monthly ingest of the latest complete month's update file."""

from __future__ import annotations

import dagster as dg

from ... import settings
from .assets import uk_price_monthly

# HM Land Registry publishes a month's file around the 20th working day of the next month.
MONTHLY_DAY = int(settings.MONTHLY_DAY.get())
MONTHLY_HOUR = int(settings.MONTHLY_HOUR.get())

monthly_update_job = dg.define_asset_job(
    "monthly_update_job",
    selection=[uk_price_monthly],
    description="Apply one month's A/C/D update file to uk_price.",
)

# For a monthly partitioned job this targets the last complete month at each tick.
monthly_update_schedule = dg.build_schedule_from_partitioned_job(
    monthly_update_job,
    name="monthly_update_schedule",
    day_of_month=MONTHLY_DAY,
    hour_of_day=MONTHLY_HOUR,
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

jobs = [monthly_update_job]
schedules = [monthly_update_schedule]

__all__ = ["jobs", "monthly_update_job", "monthly_update_schedule", "schedules"]
