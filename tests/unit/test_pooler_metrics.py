"""The pooler's metrics as configured: the exporter's config on both backends, the local
Prometheus's `pgbouncer` job, the alert rules, the port in the spec, and the one pin of the
exporter's release that the image and the bootstrap install. The manifests' side (sidecar,
policy, PodMonitor): test_k8s_metrics.py; scraped for real: tests/integration/test_metrics.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_render import REPO

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.manifests.monitoring import pooler_exporter_config_text
from citus_pipeline.cluster.local.layout import Layout
from citus_pipeline.cluster.local.monitoring import POOLER_EXPORTER_CONFIG, Monitoring
from citus_pipeline.cluster.local.netns import MemberNetwork
from citus_pipeline.cluster.metrics import POOLER_EXPORTER_VERSION, alert_rules
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import SpecError
from citus_pipeline.images.recipes import POOLER

REQUIREMENTS = REPO / "k8s" / "pooler" / "exporter-requirements.txt"
PASSWORD = "s3cret/with@odd%chars"


def _monitoring(tmp_path, **mapping) -> Monitoring:
    layout = Layout(spec_from_mapping(mapping), tmp_path)
    return Monitoring(layout, None, MemberNetwork(layout))


def _local_config(tmp_path, **mapping) -> dict:
    mon = _monitoring(tmp_path, **mapping)
    mon.write_config([], PASSWORD)
    return yaml.safe_load((mon.dir / POOLER_EXPORTER_CONFIG).read_text())


def test_the_local_exporter_listens_beside_pgbouncer_and_verifies_it(tmp_path):
    mon = _monitoring(tmp_path)
    config = _local_config(tmp_path)
    assert (config["exporter_host"], config["exporter_port"]) == ("127.0.10.251", 19127)
    assert mon.pooler_exporter_address == "127.0.10.251:19127"
    (pgb,) = config["pgbouncers"]
    ca = mon.layout.ca_file
    assert pgb["dsn"] == (
        f"postgresql://postgres@127.0.10.251:6432/pgbouncer?sslmode=verify-full&sslrootcert={ca}"
    )
    assert pgb["exclude_databases"] == ["pgbouncer"]
    # the password stays in the passfile the exporter's libpq is pointed at
    text = (mon.dir / POOLER_EXPORTER_CONFIG).read_text()
    assert PASSWORD not in text and "$(" not in text
    assert PASSWORD in (mon.dir / "pgpass").read_text()
    assert (mon.dir / "pgpass").stat().st_mode & 0o777 == 0o600


def test_both_backends_write_the_same_exporter_config_but_for_where_things_are(tmp_path):
    local = _local_config(tmp_path, tls={"enabled": True})
    k8s = yaml.safe_load(pooler_exporter_config_text(spec_from_mapping({})))
    assert k8s["exporter_host"] == "0.0.0.0" and k8s["exporter_port"] == mf.POOLER_EXPORTER_PORT
    # over the pod's loopback, TLS required as by the members' sidecars
    assert k8s["pgbouncers"][0]["dsn"] == (
        "postgresql://postgres@127.0.0.1:6432/pgbouncer?sslmode=require"
    )

    def without_places(config: dict) -> dict:
        (pgb,) = config["pgbouncers"]
        return {k: v for k, v in pgb.items() if k != "dsn"}

    assert without_places(local) == without_places(k8s)
    assert set(local) == set(k8s)


def test_tls_off_locally_connects_without_it(tmp_path):
    config = _local_config(tmp_path, tls={"enabled": False})
    assert config["pgbouncers"][0]["dsn"].endswith("/pgbouncer?sslmode=disable")


def test_prometheus_scrapes_the_pooler_only_where_there_is_one(tmp_path):
    jobs = {j["job_name"]: j for j in _monitoring(tmp_path).prometheus_config()["scrape_configs"]}
    (target,) = jobs["pgbouncer"]["static_configs"]
    assert target == {"targets": ["127.0.10.251:19127"], "labels": {"pooler": "citusdemo-pooler"}}
    off = _monitoring(tmp_path / "off", pooler={"enabled": False})
    assert "pgbouncer" not in {j["job_name"] for j in off.prometheus_config()["scrape_configs"]}
    off.write_config([], PASSWORD)
    assert not (off.dir / POOLER_EXPORTER_CONFIG).exists()


def test_the_pooler_alerts_only_where_there_is_one():
    def names(spec) -> set[str]:
        return {r["alert"] for g in alert_rules(spec)["groups"] for r in g["rules"]}

    on = names(spec_from_mapping({}))
    assert {"CitusPoolerDown", "CitusPoolerClientsWaiting"} <= on
    assert not {
        n for n in names(spec_from_mapping({"pooler": {"enabled": False}})) if "Pooler" in n
    }
    rules = {
        r["alert"]: r for g in alert_rules(spec_from_mapping({}))["groups"] for r in g["rules"]
    }
    assert 'up{job="pgbouncer"} == 0' in rules["CitusPoolerDown"]["expr"]
    assert rules["CitusPoolerClientsWaiting"]["for"] == "1m"


def test_the_exporter_port_may_not_clash_with_the_pooler():
    with pytest.raises(SpecError, match="address clash"):
        spec_from_mapping({"local": {"pooler_exporter_port": 6432}})
    # without a pooler the port is nobody's
    spec_from_mapping({"pooler": {"enabled": False}, "local": {"pooler_exporter_port": 6432}})


def test_one_pin_of_the_exporter_release_for_the_image_and_the_bootstrap():
    (line,) = [line for line in REQUIREMENTS.read_text().splitlines() if line and line[0].isalpha()]
    assert line.startswith(f"prometheus-pgbouncer-exporter=={POOLER_EXPORTER_VERSION} ")
    assert re.search(r"--hash=sha256:[0-9a-f]{64}$", REQUIREMENTS.read_text().strip())
    dockerfile = POOLER.dockerfile.read_text()
    assert "--no-deps --require-hashes" in dockerfile
    assert "-r /tmp/build/exporter-requirements.txt" in dockerfile
    bootstrap = (REPO / "scripts" / "bootstrap.sh").read_text()
    assert "-r k8s/pooler/exporter-requirements.txt" in bootstrap
    # the image's tag and the spec's default name the release too
    assert POOLER.tag.endswith(f"-{POOLER_EXPORTER_VERSION}")
    assert spec_from_mapping({}).kubernetes.pooler_image == POOLER.reference()
    assert POOLER.site_packages.startswith("opt/pgbouncer-exporter/")


def test_the_installed_exporter_reads_the_rendered_config(tmp_path):
    """The exporter's own config reader (where bootstrap --dev installed it) takes both
    backends' files as they are."""
    exe = shutil.which("pgbouncer-exporter")
    if not exe:
        pytest.skip("pgbouncer-exporter not installed: run scripts/bootstrap.sh --dev")
    python = Path(exe).read_text().splitlines()[0].removeprefix("#!").strip()
    k8s = tmp_path / "k8s.yml"
    k8s.write_text(pooler_exporter_config_text(spec_from_mapping({})))
    mon = _monitoring(tmp_path / "local")
    mon.write_config([], PASSWORD)
    read = (
        "import sys; from prometheus_pgbouncer_exporter.config import Config\n"
        "for path in sys.argv[1:]:\n"
        "    c = Config(); c.read(path); c.validate()\n"
        "    (p,) = c.getPgbouncers()\n"
        "    print(c.getExporterHost(), c.getExporterPort(), p.getDsn(), p.getExcludeDatabases())\n"
    )
    out = subprocess.run(
        [python, "-c", read, str(mon.dir / POOLER_EXPORTER_CONFIG), str(k8s)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith("127.0.10.251 19127 postgresql://postgres@127.0.10.251:6432/")
    assert out[1] == (
        "0.0.0.0 9127 postgresql://postgres@127.0.0.1:6432/pgbouncer?sslmode=require ['pgbouncer']"
    )
