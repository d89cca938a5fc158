"""The inputs of the image build: the base, the package lists, the Python pins, the records."""

from __future__ import annotations

import re
import textwrap

import pytest

from citus_pipeline.errors import ImageBuildError
from citus_pipeline.images import citus_host, python_pins, record
from citus_pipeline.images.debian_base import MIRRORS, mmdebstrap_args
from citus_pipeline.images.recipes import DAGSTER, PATRONI_CITUS, RECIPES
from citus_pipeline.settings import REPO_ROOT


def test_requirements_txt_is_the_lock_closure():
    """The Patroni image pip-installs exactly uv.lock's versions: regenerate with
    `python -m citus_pipeline.images.python_pins > k8s/image/requirements.txt`."""
    committed = (REPO_ROOT / "k8s" / "image" / "requirements.txt").read_text()
    assert committed == python_pins.requirements_text()
    pins = dict(line.split("==") for line in committed.splitlines()[1:])
    for root in ("patroni", "psycopg", "psycopg-binary", "kubernetes", "urllib3"):
        assert root in pins
    assert "pywin32" not in pins and "tzdata" not in pins  # markers for Linux CPython 3.11


def test_closure_follows_extras_and_markers(tmp_path):
    lock = tmp_path / "uv.lock"
    lock.write_text(
        textwrap.dedent("""
        [[package]]
        name = "a"
        version = "1.0"
        dependencies = [{ name = "b" }, { name = "w", marker = "sys_platform == 'win32'" }]
        [package.optional-dependencies]
        x = [{ name = "c", extra = ["y"] }]
        [[package]]
        name = "b"
        version = "2.0"
        [[package]]
        name = "c"
        version = "3.0"
        [package.optional-dependencies]
        y = [{ name = "d" }]
        [[package]]
        name = "d"
        version = "4.0"
        [[package]]
        name = "w"
        version = "5.0"
    """)
    )
    assert python_pins.locked_closure(("a",), lock) == {"a": "1.0", "b": "2.0"}
    assert python_pins.locked_closure(("a[x]",), lock) == {
        "a": "1.0",
        "b": "2.0",
        "c": "3.0",
        "d": "4.0",
    }
    with pytest.raises(KeyError, match="nope"):
        python_pins.locked_closure(("nope",), lock)


def test_base_is_debian_with_the_security_suite():
    args = mmdebstrap_args(REPO_ROOT / "x.tar")
    assert args[0] == "mmdebstrap" and "--variant=minbase" in args
    assert any("bookworm-security" in m for m in MIRRORS)
    assert all(m.startswith("deb http://deb.debian.org/") for m in MIRRORS)
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in args
    assert "--dpkgopt=path-include=/usr/share/doc/*/copyright" in args


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.key)
def test_dockerfiles_need_no_registry_and_run_as_non_root(recipe):
    text = recipe.dockerfile.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms == ["${BASE_IMAGE}"]
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", text, re.MULTILINE)
    assert "COPY --from=" not in text  # nothing copied out of another registry image
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users[-1] == recipe.user and not users[-1].startswith("0")
    # no downloaded .deb left in a layer
    if "apt-get install" in text:
        assert "apt-get clean" in text
    # nothing pinned to a package version a repository stops serving
    assert not re.search(r"apt-get install[^&]*=\S*\d", text)
    assert "apt.postgresql.org" not in text


def test_patroni_image_takes_postgres_from_debian_and_leaves_no_fetchers():
    text = PATRONI_CITUS.dockerfile.read_text()
    assert '"postgresql-${PG_MAJOR}"' in text and "pgbackrest" in text
    assert "apt-get purge -y --auto-remove curl gnupg" in text
    assert "-r /tmp/build/requirements.txt" in text and "--no-deps" in text
    uv = re.search(r"^ARG UV_VERSION=(\S+)$", DAGSTER.dockerfile.read_text(), re.MULTILINE)
    assert uv and re.fullmatch(r"\d+\.\d+\.\d+", uv[1])


def test_dpkg_status_and_dist_info_are_read_from_files(tmp_path):
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: postgresql-15\nStatus: install ok installed\nVersion: 15.20-0+deb12u1\n\n"
        "Package: curl\nStatus: deinstall ok config-files\nVersion: 7.88\n\n"
        "Package: pgbackrest\nStatus: install ok installed\nVersion: 2.45-1\n"
    )
    assert record.dpkg_packages(tmp_path) == {
        "pgbackrest": "2.45-1",
        "postgresql-15": "15.20-0+deb12u1",
    }
    site = tmp_path / "opt/patroni/lib/python3.11/site-packages"
    (site / "psycopg_binary-3.3.9.dist-info").mkdir(parents=True)
    assert record.python_packages(tmp_path, PATRONI_CITUS.site_packages) == {
        "psycopg-binary": "3.3.9"
    }


def test_citus_from_host_names_what_is_missing(tmp_path):
    with pytest.raises(ImageBuildError, match="no Citus installed here"):
        citus_host.citus_files(tmp_path / "lib", tmp_path / "ext")
