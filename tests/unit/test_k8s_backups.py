"""pgBackRest in the manifests: a stanza per group in the S3 repository, the keys from a Secret,
the backup CronJob and its Role, and nothing of it when the spec archives no WAL."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest
import yaml
from k8s_render import by_kind, env_of

from citus_pipeline.cluster import pgbackrest as pgbr
from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import SpecError


# ---- backups (pgBackRest) ---------------------------------------------------------------------
def pgbackrest_ini(cm: dict) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(cm["data"]["pgbackrest.conf"])
    return ini


def test_pgbackrest_config_has_a_stanza_per_group_with_the_s3_repo(spec, objs):
    ini = pgbackrest_ini(by_kind(objs, "ConfigMap")["citusdemo-pgbackrest"])
    b = spec.backup
    g = ini["global"]
    # the spec's repo_type is posix (the local backend's): Kubernetes takes the s3 settings
    assert b.repo_type == "posix" and g["repo1-type"] == "s3"
    assert g["repo1-path"] == f"/{spec.name}"
    assert (g["repo1-s3-endpoint"], g["repo1-s3-bucket"], g["repo1-s3-region"]) == (
        "storage.yandexcloud.net",
        b.s3_bucket,
        "ru-central1",
    )
    assert g["repo1-s3-uri-style"] == "path" and g["repo1-storage-verify-tls"] == "y"
    assert g["repo1-retention-full"] == str(b.retention_full)
    assert "repo1-s3-key" not in g and "repo1-s3-key-secret" not in g  # from the Secret only
    for key in ("spool-path", "lock-path", "log-path"):
        # on the data volume, outside PGDATA (restores and base backups leave it alone)
        assert g[key].startswith(mf.PGDATA_MOUNT + "/") and not g[key].startswith(mf.PGDATA_DIR)
    stanzas = [s for s in ini.sections() if s != "global"]
    # every group of the spec, and those add-worker may create without a re-render
    assert stanzas == [pgbr.stanza(spec, g) for g in range(mf.highest_group(spec) + 1)]
    assert mf.highest_group(spec) == spec.workers.groups + 16
    for s in stanzas:
        assert dict(ini[s]) == {
            "pg1-path": mf.PGDATA_DIR,
            "pg1-socket-path": mf.SOCKET_DIR,
            "pg1-port": "5432",
            "pg1-user": spec.credentials.superuser,
        }


def test_pgbackrest_repository_path_on_kubernetes():
    s3 = spec_from_mapping({"backup": {"repo_type": "s3", "repo_path": "/prod/citus"}})
    assert mf.kubernetes_repository(s3)[1] == "/prod/citus"
    # a posix repo_path is a local directory, not a prefix in the bucket
    posix = spec_from_mapping({"backup": {"repo_path": "/var/lib/citus-backups"}})
    spec, path = mf.kubernetes_repository(posix)
    assert path == "/citusdemo" and spec.backup.repo_type == "s3"
    assert posix.backup.repo_type == "posix"  # the spec itself is left alone


def test_the_release_in_the_image_reads_the_rendered_config(spec, tmp_path):
    exe = shutil.which("pgbackrest")
    if not exe:
        pytest.skip("pgbackrest not installed (Debian package)")
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text(mf.pgbackrest_conf(spec))
    last = pgbr.stanza(spec, mf.highest_group(spec))
    r = subprocess.run(
        [exe, f"--config={conf}", f"--stanza={last}", "help", "backup", "pg1-path"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert f"current: {mf.PGDATA_DIR}" in r.stdout


def test_every_member_mounts_the_config_and_gets_the_s3_keys_from_the_secret(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        g = int(name.rsplit("-", 1)[1])
        pod = s["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["pgbackrest"]["configMap"]["name"] == "citusdemo-pgbackrest"
        patroni = pod["containers"][0]
        mounts = {m["name"]: m for m in patroni["volumeMounts"]}
        assert mounts["pgbackrest"] == {
            "name": "pgbackrest",
            "mountPath": "/etc/pgbackrest",
            "readOnly": True,
        }
        assert mounts["run"]["mountPath"] == mf.SOCKET_DIR  # the socket pgBackRest uses
        env = env_of(s)
        assert env["CITUS_PGBACKREST_CONFIG"]["value"] == "/etc/pgbackrest/pgbackrest.conf"
        assert env["CITUS_PGBACKREST_STANZA"]["value"] == f"citusdemo-g{g}"
        for var, key in (
            ("PGBACKREST_REPO1_S3_KEY", "access-key"),
            ("PGBACKREST_REPO1_S3_KEY_SECRET", "secret-key"),
        ):
            assert env[var] == {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": spec.backup.s3_secret, "key": key}},
            }
    assert mf.S3_SECRET_KEYS == {
        "PGBACKREST_REPO1_S3_KEY": "access-key",
        "PGBACKREST_REPO1_S3_KEY_SECRET": "secret-key",
    }


def test_an_added_worker_group_gets_its_own_stanza(spec):
    g = spec.workers.groups + 1
    sts = next(o for o in mf.group_manifests(spec, g) if o["kind"] == "StatefulSet")
    stanza = env_of(sts)["CITUS_PGBACKREST_STANZA"]["value"]
    assert f"[{stanza}]" in mf.pgbackrest_conf(spec)


def test_postgresql_socket_and_archive_timeout_come_with_the_bootstrap_file(spec, objs):
    cfg = yaml.safe_load(by_kind(objs, "ConfigMap")["citusdemo-patroni"]["data"]["bootstrap.yaml"])
    local = cfg["postgresql"]["parameters"]
    assert local["unix_socket_directories"] == mf.SOCKET_DIR
    assert local["archive_timeout"] == spec.backup.archive_timeout
    # archive_mode and archive_command come from the entrypoint, with the group's stanza
    assert "archive_mode" not in local and "archive_command" not in local


def test_the_backup_cronjob_runs_on_the_spec_schedule(spec, objs):
    cj = by_kind(objs, "CronJob")["citusdemo-backup"]
    assert cj["apiVersion"] == "batch/v1"
    assert cj["spec"]["schedule"] == spec.backup.schedule
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    job = cj["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == "citusdemo-backup"
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["image"] == spec.kubernetes.image  # the members' image (the overlay rewrites both)
    assert c["command"] == ["citus-backup", "schedule"]
    args = dict(a.removeprefix("--").split("=", 1) for a in c["args"])
    assert args["type"] == spec.backup.scheduled_type
    # it finds what the members are labelled with, and the leader as the load balancers do
    sts = by_kind(objs, "StatefulSet")["citusdemo-1"]
    member_labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = dict(kv.split("=") for kv in args["members"].split(","))
    assert selector == mf.base_labels(spec)
    assert all(member_labels[k] == v for k, v in selector.items())
    assert args["group-label"] in member_labels
    key, value = args["leader"].split("=")
    coordinator_lb = by_kind(objs, "Service")["citusdemo-coordinator"]["spec"]["selector"]
    assert coordinator_lb[key] == value
    assert args["container"] == sts["spec"]["template"]["spec"]["containers"][0]["name"]


def test_the_backup_pod_is_no_member(spec, objs):
    cj = by_kind(objs, "CronJob")["citusdemo-backup"]
    labels = cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    patroni_selector = {**mf.patroni_kubernetes_labels(spec), "cluster-name": spec.name}
    assert not all(labels.get(k) == v for k, v in patroni_selector.items())
    for pol in by_kind(objs, "NetworkPolicy").values():
        sel = pol["spec"]["podSelector"]["matchLabels"]
        assert not all(labels.get(k) == v for k, v in sel.items())


def test_the_backup_role_allows_only_listing_pods_and_exec(spec, objs):
    role = by_kind(objs, "Role")["citusdemo-backup"]
    granted = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""] and "resourceNames" not in rule
        for res in rule["resources"]:
            granted.setdefault(res, set()).update(rule["verbs"])
    # list: find the leaders; exec: create (SPDY, API servers 1.35+) and get (WebSocket before)
    assert granted == {"pods": {"list"}, "pods/exec": {"create", "get"}}
    rb = by_kind(objs, "RoleBinding")["citusdemo-backup"]
    assert rb["roleRef"]["name"] == "citusdemo-backup"
    assert rb["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": "citusdemo-backup",
            "namespace": spec.kubernetes.namespace,
        }
    ]
    assert "citusdemo-backup" in by_kind(objs, "ServiceAccount")
    # the members' own ServiceAccount gains nothing
    patroni = by_kind(objs, "Role")["citusdemo-patroni"]["rules"]
    assert not any("pods/exec" in r["resources"] for r in patroni)


def test_no_backup_objects_without_archiving():
    off = spec_from_mapping({"backup": {"archiving": False}})
    objs = mf.cluster_manifests(off)
    assert not by_kind(objs, "CronJob")
    assert "citusdemo-pgbackrest" not in by_kind(objs, "ConfigMap")
    assert set(by_kind(objs, "Role")) == {"citusdemo-patroni", "citusdemo-dagster"}
    assert set(by_kind(objs, "ServiceAccount")) == {"citusdemo"}
    for s in by_kind(objs, "StatefulSet").values():
        env = env_of(s)
        assert not [n for n in env if "PGBACKREST" in n]
        assert "pgbackrest" not in {v["name"] for v in s["spec"]["template"]["spec"]["volumes"]}
    cfg = yaml.safe_load(mf.bootstrap_configmap(off)["data"]["bootstrap.yaml"])
    assert "archive_timeout" not in cfg["postgresql"]["parameters"]
    assert "backup.yaml" not in mf.render_files(off)


def test_rendering_again_without_archiving_removes_backup_yaml(tmp_path):
    mf.write_rendered(spec_from_mapping({}), tmp_path)
    (tmp_path / "mine.yaml").write_text("kind: ConfigMap\n")  # not rendered: kept
    mf.write_rendered(spec_from_mapping({"backup": {"archiving": False}}), tmp_path)
    assert not (tmp_path / "backup.yaml").exists()
    assert (tmp_path / "mine.yaml").exists() and (tmp_path / "group-2.yaml").exists()


def test_s3_secret_must_be_a_kubernetes_name():
    bad = spec_from_mapping({"backup": {"s3_secret": "backup_keys"}})
    with pytest.raises(SpecError, match="^backup.s3_secret: 'backup_keys' is not a valid"):
        mf.cluster_manifests(bad)
