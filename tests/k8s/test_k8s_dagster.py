"""The Yandex Cloud deployment as the README gives it, on the real control plane: the cluster
from `kubectl apply -k k8s/overlays/yandex-cloud`, and next to it Dagster as
`k8s/dagster/values.yaml` deploys it. The code server and the daemon run as pods of the
chart's Deployments, the instance lives in a PostgreSQL outside the cluster (as Yandex Managed
PostgreSQL would), and a run asked for through Dagster's GraphQL `launchRun` (what the UI's
Materialize button sends) is queued, launched by the daemon's `K8sRunLauncher` as a Kubernetes
Job under the code location's ServiceAccount, run by the Job's pod, and its materializations
land in the instance.
"""

from __future__ import annotations

import base64
import secrets

import dagster as dg
import psycopg
import pytest
import yaml
from kubernetes import client, utils
from plain_pg import plain_postgres
from psycopg import sql

from citus_pipeline.cluster.kubernetes import manifests as mf
from citus_pipeline.cluster.pooler_ini import session_database
from citus_pipeline.images.recipes import DAGSTER
from citus_pipeline.pki import CA
from citus_pipeline.sandbox.addons import YANDEX_DISK_CSI
from citus_pipeline.sandbox.layout import CLUSTER_CIDR, GATEWAY
from citus_pipeline.settings import REPO_ROOT as REPO
from citus_pipeline.waiting import until

from .dagster_chart import REGISTRY_ID, REGISTRY_PLACEHOLDER, DagsterRelease

pytestmark = [pytest.mark.k8s, pytest.mark.citus]

OVERLAY = REPO / "k8s" / "overlays" / "yandex-cloud"
SAMPLE_ROWS = 2000
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}
"""


def _dagster_database(pg, release: DagsterRelease, password: str) -> None:
    """The role and database `postgresql.postgresqlUsername/Database` name."""
    user, db = sql.Identifier(release.postgres_user), sql.Identifier(release.postgres_database)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(user, password))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, user))


def _secrets(core, release: DagsterRelease, spec, pg_password: str) -> None:
    """README step 6: the namespace and the two Secrets the values file names."""
    ns = release.namespace
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": release.postgres_secret},
            "stringData": {"postgresql-password": pg_password},
        },
    )
    creds = core.read_namespaced_secret(
        spec.credentials.kubernetes_secret, spec.kubernetes.namespace
    )
    # README step 6: through the pooler's session pool, as the project's clients come in
    host = f"{mf.pooler_name(spec)}.{spec.kubernetes.namespace}.svc"
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": "citus-dsn"},
            "stringData": {
                "dsn": f"host={host} port={spec.pooler.port} "
                f"dbname={session_database(spec)} user=postgres sslmode=require",
                "password": base64.b64decode(creds.data["superuser-password"]).decode(),
            },
        },
    )


def _launch(instance, release: DagsterRelease, address: str, run_config: dict) -> str:
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import GrpcServerTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    d = release.deployments[0]
    target = GrpcServerTarget(host=address, port=d["port"], location_name=d["name"], socket=None)
    with WorkspaceProcessContext(instance, target) as workspace:
        ctx = workspace.create_request_context()
        error = ctx.get_code_location_error(d["name"])
        assert error is None, error
        params = {
            "selector": {
                "repositoryLocationName": d["name"],
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["citus_cluster"]}, {"path": ["uk_price_raw"]}],
            },
            "runConfigData": run_config,
            "executionMetadata": {"tags": [{"key": "test", "value": "k8s-run-launcher"}]},
        }
        result = execute_dagster_graphql(ctx, LAUNCH_RUN, variables={"params": params})
    assert not result.errors, result.errors
    out = result.data["launchRun"]
    assert out["__typename"] == "LaunchRunSuccess", out
    return out["run"]["runId"]


def _explain(kube, instance, run_id: str) -> str:
    """The run's errors and its pod's log, for the assertion message."""
    lines = [
        f"{e.dagster_event_type or e.level}: {e.message}"
        for e in instance.all_logs(run_id)
        if e.level >= 40 or (e.dagster_event and e.dagster_event.is_failure)
    ]
    for ns, name in kube.pod_names():
        if name.startswith(f"dagster-run-{run_id}"):
            lines.append(kube.container_log(ns, name, "dagster")[-4000:])
    return "\n".join(lines)


def test_yandex_cloud_overlay_applied_with_kubectl(kube, overlay_cluster, spec):
    """README step 4 as written for Yandex Cloud: what the overlay changes is what runs."""
    overlay = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    images = {i["name"].rsplit("/", 1)[1]: i for i in overlay["images"]}
    image, pooler = images["patroni-citus"], images["pgbouncer"]
    (sc_doc,) = [d for d in yaml.safe_load_all((OVERLAY / "storage-class.yaml").read_text()) if d]
    api = kube.api()
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = spec.kubernetes.namespace
    sc = client.StorageV1Api(api).read_storage_class(sc_doc["metadata"]["name"])
    assert sc.provisioner == YANDEX_DISK_CSI and sc.reclaim_policy == sc_doc["reclaimPolicy"]
    for g in range(spec.workers.groups + 1):
        sts = apps.read_namespaced_stateful_set(mf.group_name(spec, g), ns)
        assert sts.spec.volume_claim_templates[0].spec.storage_class_name == sc.metadata.name
        postgres = sts.spec.template.spec.containers[0]
        name = image["newName"].replace(REGISTRY_PLACEHOLDER, REGISTRY_ID)
        assert postgres.image == f"{name}:{image['newTag']}"
    # every member's disk from the overlay's class, kept (Retain) if its claim goes
    claims = core.list_namespaced_persistent_volume_claim(ns).items
    assert len(claims) == spec.coordinator.members + spec.workers.groups * spec.workers.members
    volumes = {v.metadata.name: v for v in core.list_persistent_volume().items}
    for claim in claims:
        assert claim.status.phase == "Bound"
        assert volumes[claim.spec.volume_name].spec.persistent_volume_reclaim_policy == "Retain"
    # the internal load balancers: annotated for Yandex's cloud controller, served here
    lbs = (mf.coordinator_lb_name(spec), mf.workers_lb_name(spec), mf.read_lb_name(spec))
    for name in (*lbs, mf.pooler_name(spec)):
        svc = core.read_namespaced_service(name, ns)
        assert svc.metadata.annotations["yandex.cloud/load-balancer-type"] == "internal"
        assert svc.status.load_balancer.ingress
    topo = overlay_cluster.status()
    assert all(topo.leader(g) is not None for g in range(spec.workers.groups + 1))
    # the pooler runs the image the overlay names, pushed to the registry as README step 2 says
    name = pooler["newName"].replace(REGISTRY_PLACEHOLDER, REGISTRY_ID)
    dep = apps.read_namespaced_deployment(mf.pooler_name(spec), ns)
    assert dep.spec.template.spec.containers[0].image == f"{name}:{pooler['newTag']}"
    overlay_cluster.wait_for_pooler(120)


def _deploy(kube, release: DagsterRelease, spec, pg_password: str) -> None:
    """README step 6 on the sandbox: the image pushed under the values' names, the Secrets,
    then what the chart renders, until the code server is ready."""
    for name in {release.image(d) for d in release.deployments} | {release.daemon_image()}:
        kube.sandbox.tag_image(DAGSTER.reference(), name)
    api = kube.api()
    _secrets(client.CoreV1Api(api), release, spec, pg_password)
    for m in release.manifests():
        utils.create_from_dict(api, m)
    apps = client.AppsV1Api(api)
    name = f"{release.fullname}-{release.deployments[0]['name']}"
    until(
        lambda: apps.read_namespaced_deployment(name, release.namespace),
        300,
        2,
        f"deployment {name} ready",
        done=lambda dep: (dep.status.ready_replicas or 0) >= 1,
    )


def test_k8s_run_launcher_runs_a_job(kube, overlay_cluster, spec, tmp_path, monkeypatch):
    gateway = GATEWAY
    # the values' database port; its host is the one address every pod reaches off-cluster
    release = DagsterRelease.load(gateway)
    ns, d = release.namespace, release.deployments[0]
    pg_password = secrets.token_urlsafe(18)
    crt, key = CA.create("dagster-pg-ca").issue("dagster-pg", ips=(gateway,), server=True)
    # the pods (the daemon, the code server, the run's Job), and this machine (the test plays
    # the webserver) at the bridge's address
    hba = [
        f"hostssl {release.postgres_database} {release.postgres_user} {net} scram-sha-256"
        for net in (CLUSTER_CIDR, f"{gateway}/32")
    ]
    with plain_postgres(
        release.postgres_port,
        listen=f"{gateway},127.0.0.1",
        settings={"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"},
        hba=hba,
        files={"server.crt": crt, "server.key": key},
    ) as pg:
        _dagster_database(pg, release, pg_password)
        _deploy(kube, release, spec, pg_password)
        core, batch = client.CoreV1Api(kube.api()), client.BatchV1Api(kube.api())

        # the test plays the webserver: the chart's instance, the code server by its Service
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(release.instance()))
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg_password)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            # the code server's pod (this machine routes to pods, not to Service addresses:
            # those only the nodes' kube-proxies serve)
            endpoints = core.read_namespaced_endpoints(d["name"], ns)
            address = endpoints.subsets[0].addresses[0].ip
            # a small generated sample, as a user would ask for it in the launchpad (this
            # config replaces the resource's whole configuration: the work directory comes
            # from the image's variable all the same)
            run_config = {"resources": {"files": {"config": {"sample_rows": SAMPLE_ROWS}}}}
            run_id = _launch(instance, release, address, run_config)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.QUEUED

            run = until(
                lambda: instance.get_run_by_id(run_id),
                600,
                3,
                f"run {run_id} finished",
                done=lambda r: r.is_finished,
            )
            assert run.status == dg.DagsterRunStatus.SUCCESS, _explain(kube, instance, run_id)

            # the Job the daemon's launcher created, under the code location's identity and
            # image (the run is recorded as finished just before its process exits and the
            # Job counts it)
            job = until(
                lambda: batch.read_namespaced_job(f"dagster-run-{run_id}", ns),
                120,
                2,
                f"job dagster-run-{run_id} done",
                done=lambda j: j.status.succeeded or j.status.failed,
            )
            assert job.status.succeeded == 1, job.status
            pod_spec = job.spec.template.spec
            assert pod_spec.service_account_name == release.user_deployments_service_account
            container = pod_spec.containers[0]
            assert container.image == release.image(d)
            env = {e.name for e in container.env or []}
            assert {"CITUS_PIPELINE_DSN", "CITUS_PIPELINE_SPEC", "DAGSTER_PG_PASSWORD"} <= env

            # its result is in the instance, and its rows in the cluster
            mats = {
                key.to_user_string(): instance.get_latest_materialization_event(key)
                for key in (dg.AssetKey("citus_cluster"), dg.AssetKey("uk_price_raw"))
            }
            assert all(e is not None and e.run_id == run_id for e in mats.values()), mats
            md = mats["citus_cluster"].asset_materialization.metadata
            assert md["backend"].value == "kubernetes"
            assert md["worker_count"].value == spec.workers.groups
    with psycopg.connect(overlay_cluster.coordinator_dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT count(*) FROM uk_price_raw").fetchone()[0]
    assert rows == SAMPLE_ROWS
