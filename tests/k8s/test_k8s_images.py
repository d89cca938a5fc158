"""The images the sandbox runs, as `k8s build-images` made them: OCI archives whose record
says they carry what the local tests ran (Debian's PostgreSQL and pgBackRest of this machine,
uv.lock's Python packages, this machine's Citus), non-root, with no fetcher left behind."""

from __future__ import annotations

import json
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

from citus_pipeline.images.build import MANIFEST
from citus_pipeline.images.record import citus_version
from citus_pipeline.settings import REPO_ROOT

pytestmark = [pytest.mark.k8s]


def _host_version(package: str) -> str:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=True
    )
    return out.stdout


def _locked() -> dict[str, str]:
    lock = tomllib.loads((REPO_ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"]}


def test_the_images_carry_what_the_local_tests_ran(kube):
    record = json.loads((kube.sandbox.layout.images / MANIFEST).read_text())
    images = {i["key"]: i for i in record["images"]}
    patroni, dagster = images["patroni-citus"], images["citus-pipeline-dagster"]
    deb = patroni["debian_packages"]
    for package in ("postgresql-15", "pgbackrest"):
        assert deb[package] == _host_version(package), package
    assert not {"curl", "gnupg", "gpg"} & set(deb)
    locked = _locked()
    for package in ("patroni", "psycopg", "psycopg-binary", "kubernetes"):
        assert patroni["python_packages"][package] == locked[package], package
    for package in ("dagster", "dagster-k8s", "dagster-postgres", "psycopg"):
        assert dagster["python_packages"][package] == locked[package], package
    assert patroni["citus_version"] == citus_version(Path("/"))  # this machine's Citus
    assert patroni["citus_from_host"]["libraries"][0] == "citus.so"
    for image in images.values():
        assert image["user"] and not image["user"].startswith(("0", "root")), image["key"]
    assert patroni["entrypoint"] == ["/opt/patroni/bin/python3", "/usr/local/bin/citus-entrypoint"]
    assert "patroni-citus" in patroni["reference"]


def test_each_archive_is_an_oci_image_layout_named_as_the_manifests_name_it(kube):
    record = json.loads((kube.sandbox.layout.images / MANIFEST).read_text())
    for image in record["images"]:
        with tarfile.open(kube.sandbox.layout.images / image["archive"]) as tar:
            layout = json.load(tar.extractfile("oci-layout"))
            index = json.load(tar.extractfile("index.json"))
        assert layout["imageLayoutVersion"] == "1.0.0"
        (manifest,) = index["manifests"]
        assert manifest["annotations"]["org.opencontainers.image.ref.name"] == image["reference"]
