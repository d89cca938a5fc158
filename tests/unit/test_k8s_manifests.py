"""Manifests rendered from the ClusterSpec: schema-valid, faithful to the spec, what Patroni needs:
each group's StatefulSet, Services and Endpoints, the load balancers and the network policies."""

from __future__ import annotations

import json

import kubernetes_validate
import yaml
from k8s_render import K8S_VERSION, REPO, by_kind, env_of

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.kubernetes.apply import validate_manifests
from citus_pipeline.cluster.spec import spec_from_mapping


# ---- schema -----------------------------------------------------------------------------------
def test_pinned_version_is_the_spec_default(spec):
    assert spec.kubernetes.api_version == K8S_VERSION


def test_every_manifest_validates_against_the_openapi_schema(objs):
    for o in objs:
        # strict: unknown fields are errors too
        kubernetes_validate.validate(o, K8S_VERSION, strict=True)


def test_validation_catches_a_broken_manifest(objs):
    sts = json.loads(json.dumps(next(o for o in objs if o["kind"] == "StatefulSet")))
    sts["spec"]["replicas"] = "three"
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    problems = validate_manifests([("test", sts)], K8S_VERSION)
    assert len(problems) == 1 and "StatefulSet" in problems[0]


def test_overlay_objects_validate_too():
    overlay = REPO / "k8s" / "overlays" / "yandex-cloud"
    sc = yaml.safe_load((overlay / "storage-class.yaml").read_text())
    kubernetes_validate.validate(sc, K8S_VERSION, strict=True)


# ---- topology ---------------------------------------------------------------------------------
def test_one_statefulset_per_group_with_spec_replicas(spec, objs):
    sts = by_kind(objs, "StatefulSet")
    assert set(sts) == {f"citusdemo-{g}" for g in range(spec.workers.groups + 1)}
    assert sts["citusdemo-0"]["spec"]["replicas"] == spec.coordinator.members == 3
    for g in spec.worker_groups:
        assert sts[f"citusdemo-{g}"]["spec"]["replicas"] == spec.workers.members


def test_three_worker_groups_render_group_3():
    spec = spec_from_mapping({"workers": {"groups": 3, "members": 3}})
    objs = mf.cluster_manifests(spec)
    sts = by_kind(objs, "StatefulSet")
    assert "citusdemo-3" in sts and "citusdemo-4" not in sts
    s3 = sts["citusdemo-3"]
    assert s3["spec"]["replicas"] == 3
    assert env_of(s3)["PATRONI_CITUS_GROUP"]["value"] == "3"
    assert s3["metadata"]["labels"]["citus-group"] == "3"
    assert "citusdemo-3" in by_kind(objs, "PodDisruptionBudget")
    assert "citusdemo-3-headless" in by_kind(objs, "Service")
    assert "group-3.yaml" in mf.render_files(spec)


def test_labels(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        g = int(name.rsplit("-", 1)[1])
        labels = s["spec"]["template"]["metadata"]["labels"]
        assert labels["cluster-name"] == spec.name
        assert labels["citus-group"] == str(g)
        assert labels["citus-type"] == ("coordinator" if g == 0 else "worker")
        sel = s["spec"]["selector"]["matchLabels"]
        assert all(labels[k] == v for k, v in sel.items())
        assert "role" not in sel, "the selector must not depend on the role Patroni changes"


def test_patroni_env(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        g = name.rsplit("-", 1)[1]
        env = env_of(s)
        assert env["PATRONI_SCOPE"]["value"] == spec.name
        assert env["PATRONI_CITUS_GROUP"]["value"] == g
        assert env["PATRONI_CITUS_DATABASE"]["value"] == spec.database
        assert env["PATRONI_KUBERNETES_USE_ENDPOINTS"]["value"] == "true"
        assert env["PATRONI_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert (
            env["PATRONI_KUBERNETES_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"]
            == "metadata.namespace"
        )
        assert (
            env["PATRONI_KUBERNETES_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        )
        assert env["PATRONI_KUBERNETES_LEADER_LABEL_VALUE"]["value"] == "primary"
        labels = yaml.safe_load(env["PATRONI_KUBERNETES_LABELS"]["value"])
        pod_labels = s["spec"]["template"]["metadata"]["labels"]
        # Patroni lists pods/endpoints with these labels + the scope label: the pods must match ...
        assert all(pod_labels[k] == v for k, v in labels.items())
        # ... and the group label must not be among them, or the coordinator sees no workers.
        assert "citus-group" not in labels
        ports = yaml.safe_load(env["PATRONI_KUBERNETES_PORTS"]["value"])
        assert ports == [{"name": "postgresql", "port": 5432}]


def test_connect_address_is_the_stable_dns_name(spec, objs):
    for name, s in by_kind(objs, "StatefulSet").items():
        env = env_of(s)
        names = list(env)
        headless = s["spec"]["serviceName"]
        assert headless == f"{name}-headless"
        for var, port in (
            ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", 5432),
            ("PATRONI_RESTAPI_CONNECT_ADDRESS", 8008),
        ):
            assert (
                env[var]["value"]
                == f"$(PATRONI_NAME).{headless}.$(PATRONI_KUBERNETES_NAMESPACE).svc:{port}"
            )
            # $(VAR) expands only variables defined earlier in the list
            assert names.index("PATRONI_NAME") < names.index(var)
            assert names.index("PATRONI_KUBERNETES_NAMESPACE") < names.index(var)
        svc = by_kind(objs, "Service")[headless]
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert svc["spec"]["selector"] == s["spec"]["selector"]["matchLabels"]


def test_secrets_are_referenced_never_inlined(spec, objs):
    assert not [o for o in objs if o["kind"] == "Secret"]
    for s in by_kind(objs, "StatefulSet").values():
        env = env_of(s)
        for var, key in (
            ("PATRONI_SUPERUSER_PASSWORD", "superuser-password"),
            ("PATRONI_REPLICATION_PASSWORD", "replication-password"),
            ("PATRONI_RESTAPI_PASSWORD", "restapi-password"),
        ):
            assert "value" not in env[var]
            assert env[var]["valueFrom"]["secretKeyRef"] == {
                "name": spec.credentials.kubernetes_secret,
                "key": key,
            }
        assert env["PATRONI_RESTAPI_USERNAME"]["value"] == spec.credentials.restapi_user
    for s in by_kind(objs, "StatefulSet").values():
        for e in env_of(s).values():
            if "PASSWORD" in e["name"]:
                assert set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"], e
    cfg = by_kind(objs, "ConfigMap")["citusdemo-patroni"]["data"]["bootstrap.yaml"]
    assert "password:" not in cfg


def test_storage_probes_resources_and_grace(spec, objs):
    k = spec.kubernetes
    for name, s in by_kind(objs, "StatefulSet").items():
        pod = s["spec"]["template"]["spec"]
        vct = s["spec"]["volumeClaimTemplates"]
        assert [v["metadata"]["name"] for v in vct] == ["pgdata"]
        assert vct[0]["spec"]["resources"]["requests"]["storage"] == k.storage_size
        assert vct[0]["spec"]["storageClassName"] == k.storage_class
        assert not any(v["name"] == "pgdata" for v in pod["volumes"]), (
            "pgdata must be a PVC, not a pod volume"
        )
        assert pod["terminationGracePeriodSeconds"] == k.termination_grace_period_seconds
        c = pod["containers"][0]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readiness"
        assert c["readinessProbe"]["httpGet"]["port"] == "patroni"
        # a member that stops answering is killed within about ttl, with a short grace of
        # its own instead of the pod's (the grace that lets a leader hand over)
        live = c["livenessProbe"]
        assert live["httpGet"]["path"] == "/liveness"
        stall = live["failureThreshold"] * live["periodSeconds"] + live["timeoutSeconds"]
        assert stall + live["terminationGracePeriodSeconds"] <= spec.patroni.ttl + 10
        assert live["terminationGracePeriodSeconds"] < pod["terminationGracePeriodSeconds"]
        assert {"name": "patroni", "containerPort": 8008, "protocol": "TCP"} in c["ports"]
        want = k.coordinator_resources if name.endswith("-0") else k.worker_resources
        assert c["resources"]["requests"] == {"cpu": want.cpu, "memory": want.memory}
        assert c["resources"]["limits"]["memory"] == want.memory_limit
        assert pod["securityContext"]["runAsNonRoot"] is True


def test_anti_affinity_across_nodes(objs):
    for s in by_kind(objs, "StatefulSet").values():
        req = s["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert req[0]["topologyKey"] == "kubernetes.io/hostname"
        assert req[0]["labelSelector"]["matchLabels"] == s["spec"]["selector"]["matchLabels"]


def test_pdb_per_group(spec, objs):
    pdbs = by_kind(objs, "PodDisruptionBudget")
    sts = by_kind(objs, "StatefulSet")
    assert set(pdbs) == set(sts) | {"citusdemo-pooler"}  # the pooler's: tests/unit/test_k8s_pooler
    pdbs.pop("citusdemo-pooler")
    for name, pdb in pdbs.items():
        assert pdb["spec"]["maxUnavailable"] == 1
        assert (
            pdb["spec"]["selector"]["matchLabels"] == sts[name]["spec"]["selector"]["matchLabels"]
        )


def test_patroni_dcs_services_and_endpoints(spec, objs):
    svcs, eps = by_kind(objs, "Service"), by_kind(objs, "Endpoints")
    for g in range(spec.workers.groups + 1):
        leader = svcs[f"citusdemo-{g}"]
        assert "selector" not in leader["spec"], (
            "Patroni fills the leader Endpoints, not a selector"
        )
        assert leader["spec"]["ports"][0]["name"] == "postgresql"
        assert eps[f"citusdemo-{g}"]["metadata"]["labels"]["citus-group"] == str(g)
        cfg = svcs[f"citusdemo-{g}-config"]
        assert cfg["spec"]["clusterIP"] == "None" and "selector" not in cfg["spec"]


def test_services_with_a_selector_stay_out_of_patronis_label_selector(spec, objs):
    patroni_selector = {**mf.patroni_kubernetes_labels(spec), "cluster-name": spec.name}
    selected = [n for n, s in by_kind(objs, "Service").items() if "selector" in s["spec"]]
    # headless per group + four load balancers
    assert len(selected) == spec.workers.groups + 1 + 4
    for name in selected:
        labels = by_kind(objs, "Service")[name]["metadata"]["labels"]
        assert not all(labels.get(k) == v for k, v in patroni_selector.items()), name


def test_four_load_balancers(spec, objs):
    lbs = {
        n: s for n, s in by_kind(objs, "Service").items() if s["spec"].get("type") == "LoadBalancer"
    }
    # the pooler's: tests/unit/test_k8s_pooler.py
    assert set(lbs) == {
        "citusdemo-coordinator",
        "citusdemo-workers",
        "citusdemo-read",
        "citusdemo-pooler",
    }
    coord, workers = lbs["citusdemo-coordinator"]["spec"], lbs["citusdemo-workers"]["spec"]
    read = lbs["citusdemo-read"]["spec"]
    assert coord["selector"] == {
        "application": "citus-pipeline",
        "cluster-name": spec.name,
        "citus-type": "coordinator",
        "role": "primary",
    }
    assert (
        workers["selector"]["citus-type"] == "worker" and workers["selector"]["role"] == "primary"
    )
    # the read endpoint: the coordinator's standbys, never its leader
    assert read["selector"] == {**coord["selector"], "role": "replica"}
    for s in (coord, workers, read):
        assert s["ports"][0]["port"] == 5432


def test_bootstrap_config_scram_and_tls(spec, objs):
    cm = by_kind(objs, "ConfigMap")["citusdemo-patroni"]
    cfg = yaml.safe_load(cm["data"]["bootstrap.yaml"])
    dcs = cfg["bootstrap"]["dcs"]
    params = dcs["postgresql"]["parameters"]
    assert params["password_encryption"] == "scram-sha-256"
    assert params["citus.node_conninfo"].startswith("sslmode=verify-full ")
    # a worker cut off or paused must not hold the coordinator's statements for minutes
    assert "tcp_user_timeout=10000" in params["citus.node_conninfo"]
    for line in dcs["postgresql"]["pg_hba"]:
        assert line.split()[-1] == "scram-sha-256", line
        assert line.startswith(("local", "hostssl")), line
    local = cfg["postgresql"]["parameters"]
    assert local["ssl"] == "on"
    assert {local["ssl_cert_file"], local["ssl_ca_file"]} == {
        "/etc/citus-tls/tls.crt",
        "/etc/citus-tls/ca.crt",
    }
    assert (
        dcs["ttl"] == spec.patroni.ttl and dcs["synchronous_mode"] == spec.patroni.synchronous_mode
    )
    sts = by_kind(objs, "StatefulSet")["citusdemo-1"]["spec"]["template"]["spec"]
    tls = next(v for v in sts["volumes"] if v["name"] == "tls")
    assert tls["secret"]["secretName"] == spec.kubernetes.tls_secret


def test_network_policies(spec, objs):
    pols = by_kind(objs, "NetworkPolicy")
    deny = pols["citusdemo-default-deny"]["spec"]
    assert deny["ingress"] == [] and deny["policyTypes"] == ["Ingress"]
    members = pols["citusdemo-members"]["spec"]["ingress"][0]
    # PostgreSQL, Patroni's REST API, pgBackRest's TLS server (a backup from a standby)
    assert sorted(p["port"] for p in members["ports"]) == [5432, 8008, 8432]
    assert members["from"] == [{"podSelector": {"matchLabels": mf.base_labels(spec)}}]
    dag = pols["citusdemo-dagster-to-coordinator"]["spec"]
    assert dag["podSelector"]["matchLabels"]["citus-type"] == "coordinator"
    assert dag["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    assert dag["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": spec.kubernetes.dagster_namespace
    }
    lb = pols["citusdemo-load-balancer-clients"]["spec"]
    assert lb["podSelector"]["matchLabels"]["role"] == "primary"
    assert [f["ipBlock"]["cidr"] for f in lb["ingress"][0]["from"]] == list(
        spec.kubernetes.client_cidrs
    )
    # the read endpoint's clients reach the coordinator's standbys, no worker standby
    read = pols["citusdemo-read-clients"]["spec"]
    assert read["podSelector"]["matchLabels"] == {
        **mf.base_labels(spec),
        "citus-type": "coordinator",
        "role": "replica",
    }
    assert read["ingress"][0]["from"] == lb["ingress"][0]["from"]
    assert read["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    # nothing else opens a port
    opened = {
        p["port"] for pol in pols.values() for rule in pol["spec"]["ingress"] for p in rule["ports"]
    }
    # 9187 and 9127: the members' and the pooler's exporters, for the Prometheus namespace
    # only; 6432: the pooler; 8432: pgBackRest's TLS server, for the members only
    assert opened == {5432, 6432, 8008, 8432, 9127, 9187}
