"""Settings: one name per variable; the names of earlier versions still work, and warn once."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from citus_pipeline import settings


@pytest.fixture
def clean_env(monkeypatch):
    for s in settings.ALL:
        for name in (s.name, *s.deprecated):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(settings, "_warned", set())
    return monkeypatch


def test_the_documented_name_is_read_and_the_default_used_without_it(clean_env):
    assert settings.BACKEND.get() == "local"
    assert settings.DSN.get() == "" and settings.DSN.env_name() is None
    clean_env.setenv("CITUS_PIPELINE_DSN", "host=a")
    assert settings.DSN.get() == "host=a" and settings.DSN.env_name() == "CITUS_PIPELINE_DSN"


def test_an_old_name_still_works_and_warns_once(clean_env):
    clean_env.setenv("CITUS_COORDINATOR_DSN", "host=old")
    with pytest.warns(
        FutureWarning, match="CITUS_COORDINATOR_DSN is deprecated: set CITUS_PIPELINE_DSN"
    ):
        assert settings.DSN.get() == "host=old"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert settings.DSN.env_name() == "CITUS_COORDINATOR_DSN"  # no second warning


def test_the_documented_name_wins_over_an_old_one(clean_env):
    clean_env.setenv("CITUS_PIPELINE_STATE", "/old")
    clean_env.setenv("CITUS_PIPELINE_STATE_DIR", "/new")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert settings.default_state_dir() == Path("/new")


def test_every_name_is_taken_once():
    names = [n for s in settings.ALL for n in (s.name, *s.deprecated)]
    assert len(names) == len(set(names))
