"""What the official Dagster Helm chart renders from `k8s/dagster/values.yaml`, for the control
plane of the tests: the chart's repository (dagster-io.github.io/helm) is not a package
registry this machine reaches, so the objects a run needs are rendered here the way the
chart's templates of the locked version render them (dagster chart: configmap-instance.yaml
and helpers/instance/*.tpl, deployment-daemon.yaml, role.yaml, rolebinding.yaml,
configmap-workspace.yaml; subchart dagster-user-deployments: deployment-user.yaml,
service-user.yaml and the container context of `includeConfigInLaunchedRuns`). Values the
file leaves out take the chart's defaults, named in `CHART_DEFAULTS`. Not rendered: the
webserver (runs are created through the same GraphQL mutation in the test process), the
daemon's init containers (they wait for the database and the code server's name; the daemon
retries both anyway), the instance-migrate Job and the chart's Secrets (the user creates them,
as `k8s/README.md` says).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from citus_pipeline.settings import REPO_ROOT as REPO

VALUES = REPO / "k8s" / "dagster" / "values.yaml"
REGISTRY_PLACEHOLDER = "REPLACE-WITH-REGISTRY-ID"
REGISTRY_ID = "crpsandbox0registry0"  # a Container Registry id's shape: lowercase, 20 chars

# The chart's defaults for what values.yaml does not set (chart 1.13.x values.yaml).
CHART_DEFAULTS: dict[str, Any] = {
    "dagster_home": "/opt/dagster/dagster_home",
    "daemon_image": "docker.io/dagster/dagster-celery-k8s:1.13.27",
    "run_launcher_image_pull_policy": "Always",
    "compute_log_manager": {
        "module": "dagster.core.storage.noop_compute_log_manager",
        "class": "NoOpComputeLogManager",
    },
    "run_monitoring": {"enabled": True, "start_timeout_seconds": 300, "poll_interval_seconds": 120},
    "telemetry": True,
}

Manifest = dict[str, Any]


@dataclass
class DagsterRelease:
    """`helm upgrade --install <release> dagster/dagster -n <namespace> -f values.yaml`, with
    `postgresql.postgresqlHost`/port pointed at the database the user gives Dagster."""

    values: dict[str, Any]
    postgres_host: str
    postgres_port: int
    release: str = "dagster"
    namespace: str = "dagster"

    @classmethod
    def load(cls, postgres_host: str, postgres_port: int | None = None) -> DagsterRelease:
        # the user's registry id where the values file leaves it to fill in
        values = yaml.safe_load(VALUES.read_text().replace(REGISTRY_PLACEHOLDER, REGISTRY_ID))
        port = postgres_port or values["postgresql"]["service"]["port"]
        return cls(values, postgres_host, port)

    # ---- names the chart derives from the release ------------------------------------------
    @property
    def fullname(self) -> str:  # "dagster" for a release named dagster (the chart's rule)
        return self.release if "dagster" in self.release else f"{self.release}-dagster"

    @property
    def service_account(self) -> str:
        """The daemon's and webserver's: it launches the run Jobs."""
        return self.fullname

    @property
    def user_deployments_service_account(self) -> str:
        """The code servers'; `includeConfigInLaunchedRuns` puts it on the runs too."""
        return f"{self.fullname}-user-deployments"

    @property
    def instance_config_map(self) -> str:
        return f"{self.fullname}-instance"

    @property
    def workspace_config_map(self) -> str:
        return f"{self.fullname}-workspace-yaml"

    def user_env_config_map(self, d: dict[str, Any]) -> str:
        return f"{self.fullname}-{d['name']}-user-env"

    @property
    def deployments(self) -> list[dict[str, Any]]:
        return self.values["dagster-user-deployments"]["deployments"]

    @property
    def postgres_user(self) -> str:
        return self.values["postgresql"]["postgresqlUsername"]

    @property
    def postgres_database(self) -> str:
        return self.values["postgresql"]["postgresqlDatabase"]

    @property
    def postgres_secret(self) -> str:
        return self.values["global"]["postgresqlSecretName"]

    @staticmethod
    def image(d: dict[str, Any]) -> str:
        return f"{d['image']['repository']}:{d['image']['tag']}"

    # ---- the instance ----------------------------------------------------------------------
    def _postgres(self) -> dict[str, Any]:
        pg = self.values["postgresql"]
        return {
            "postgres_db": {
                "username": self.postgres_user,
                "password": {"env": "DAGSTER_PG_PASSWORD"},
                "hostname": self.postgres_host,
                "db_name": self.postgres_database,
                "port": self.postgres_port,
                "params": pg.get("postgresqlParams") or {},
                **({"scheme": pg["postgresqlScheme"]} if pg.get("postgresqlScheme") else {}),
            }
        }

    def instance(self) -> dict[str, Any]:
        """`dagster.yaml` of the instance ConfigMap."""
        storage = {
            kind: {"module": f"dagster_postgres.{mod}", "class": cls, "config": self._postgres()}
            for kind, mod, cls in (
                ("schedule_storage", "schedule_storage", "PostgresScheduleStorage"),
                ("run_storage", "run_storage", "PostgresRunStorage"),
                ("event_log_storage", "event_log", "PostgresEventLogStorage"),
            )
        }
        launcher_values = self.values["runLauncher"]["config"]["k8sRunLauncher"]
        launcher: dict[str, Any] = {
            "load_incluster_config": launcher_values["loadInclusterConfig"],
            "job_namespace": launcher_values.get("jobNamespace") or self.namespace,
            "image_pull_policy": launcher_values.get(
                "imagePullPolicy", CHART_DEFAULTS["run_launcher_image_pull_policy"]
            ),
            "service_account_name": self.service_account,
            "dagster_home": CHART_DEFAULTS["dagster_home"],
            "instance_config_map": self.instance_config_map,
            "postgres_password_secret": self.postgres_secret,
        }
        run_k8s = launcher_values.get("runK8sConfig") or {}
        if run_k8s:
            launcher["run_k8s_config"] = {
                key: run_k8s[camel]
                for key, camel in (
                    ("container_config", "containerConfig"),
                    ("pod_spec_config", "podSpecConfig"),
                    ("pod_template_spec_metadata", "podTemplateSpecMetadata"),
                    ("job_spec_config", "jobSpecConfig"),
                    ("job_metadata", "jobMetadata"),
                )
                if run_k8s.get(camel)
            }
        return {
            "scheduler": {
                "module": "dagster.core.scheduler",
                "class": "DagsterDaemonScheduler",
            },
            **storage,
            "run_launcher": {
                "module": "dagster_k8s",
                "class": "K8sRunLauncher",
                "config": launcher,
            },
            "run_coordinator": {
                "module": "dagster.core.run_coordinator",
                "class": "QueuedRunCoordinator",
                "config": {},
            },
            "compute_logs": CHART_DEFAULTS["compute_log_manager"],
            "run_monitoring": CHART_DEFAULTS["run_monitoring"],
            "telemetry": {"enabled": CHART_DEFAULTS["telemetry"]},
        }

    def container_context(self, d: dict[str, Any]) -> dict[str, Any]:
        """What a code server hands the runs it launches (`includeConfigInLaunchedRuns`)."""
        k8s: dict[str, Any] = {
            "image_pull_policy": d["image"]["pullPolicy"],
            "env_config_maps": [self.user_env_config_map(d)],
            "namespace": self.namespace,
            "service_account_name": self.user_deployments_service_account,
        }
        if isinstance(d.get("env"), list):
            k8s["env"] = d["env"]
        return {"k8s": k8s}

    # ---- objects ---------------------------------------------------------------------------
    def _meta(self, name: str, **labels: str) -> Manifest:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {
                "app.kubernetes.io/name": "dagster",
                "app.kubernetes.io/instance": self.release,
                **labels,
            },
        }

    def _config_map(self, name: str, data: dict[str, str]) -> Manifest:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self._meta(name), "data": data}

    def _deployment(
        self, name: str, labels: dict[str, str], pod: Manifest, **spec: Any
    ) -> Manifest:
        """One replica of ``pod``, selected by ``labels`` (the chart's Deployments)."""
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self._meta(name, **labels),
            "spec": {
                "replicas": 1,
                **spec,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }

    def _pg_password_env(self) -> Manifest:
        """DAGSTER_PG_PASSWORD from the Secret the values name, in every Dagster container."""
        return {
            "name": "DAGSTER_PG_PASSWORD",
            "valueFrom": {
                "secretKeyRef": {"name": self.postgres_secret, "key": "postgresql-password"}
            },
        }

    def _user_deployment(self, d: dict[str, Any]) -> list[Manifest]:
        labels = {"component": "user-deployments", "deployment": d["name"]}
        port = d["port"]
        env = [{"name": "DAGSTER_CURRENT_IMAGE", "value": self.image(d)}, self._pg_password_env()]
        if (d.get("includeConfigInLaunchedRuns") or {"enabled": True}).get("enabled"):
            env.append(
                {
                    "name": "DAGSTER_CONTAINER_CONTEXT",
                    "value": json.dumps(self.container_context(d)),
                }
            )
        env += d.get("env") or []
        health = ["dagster", "api", "grpc-health-check", "-p", str(port)]
        pod = {
            "serviceAccountName": self.user_deployments_service_account,
            "automountServiceAccountToken": True,
            "securityContext": d.get("podSecurityContext") or {},
            "containers": [
                {
                    "name": "dagster-user-deployments",
                    "image": self.image(d),
                    "imagePullPolicy": d["image"]["pullPolicy"],
                    "securityContext": d.get("securityContext") or {},
                    "args": [
                        "dagster",
                        "code-server",
                        "start",
                        "-h",
                        "0.0.0.0",
                        "-p",
                        str(port),
                        *d["codeServerArgs"],
                    ],
                    "env": env,
                    "envFrom": [
                        {"configMapRef": {"name": f"{self.fullname}-user-deployments-shared-env"}},
                        {"configMapRef": {"name": self.user_env_config_map(d)}},
                    ],
                    "resources": d.get("resources") or {},
                    "readinessProbe": {
                        "exec": {"command": health},
                        "periodSeconds": 20,
                        "timeoutSeconds": 10,
                        "successThreshold": 1,
                        "failureThreshold": 15,
                    },
                }
            ],
        }
        deployment = self._deployment(f"{self.fullname}-{d['name']}", labels, pod)
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta(d["name"], **labels),
            "spec": {
                "type": "ClusterIP",
                "selector": labels,
                "ports": [{"name": "grpc", "protocol": "TCP", "port": port, "targetPort": port}],
            },
        }
        return [deployment, service]

    def daemon_image(self) -> str:
        """dagsterDaemon.image of the values, else the chart's default."""
        image = (self.values.get("dagsterDaemon") or {}).get("image")
        if image:
            return f"{image['repository']}:{image['tag']}"
        return CHART_DEFAULTS["daemon_image"]

    def _daemon(self) -> Manifest:
        home = CHART_DEFAULTS["dagster_home"]
        pod = {
            "serviceAccountName": self.service_account,
            "containers": [
                {
                    "name": "dagster",
                    "image": self.daemon_image(),
                    "command": [
                        "/bin/bash",
                        "-c",
                        "dagster-daemon run -w /dagster-workspace/workspace.yaml",
                    ],
                    "env": [
                        self._pg_password_env(),
                        {"name": "DAGSTER_DAEMON_HEARTBEAT_TOLERANCE", "value": "1800"},
                    ],
                    "envFrom": [{"configMapRef": {"name": f"{self.fullname}-daemon-env"}}],
                    "volumeMounts": [
                        {
                            "name": "dagster-instance",
                            "mountPath": f"{home}/dagster.yaml",
                            "subPath": "dagster.yaml",
                        },
                        {"name": "dagster-workspace-yaml", "mountPath": "/dagster-workspace/"},
                    ],
                }
            ],
            "volumes": [
                {"name": "dagster-instance", "configMap": {"name": self.instance_config_map}},
                {
                    "name": "dagster-workspace-yaml",
                    "configMap": {"name": self.workspace_config_map},
                },
            ],
        }
        labels = {"component": "dagster-daemon", "deployment": "daemon"}
        return self._deployment(
            f"{self.fullname}-daemon", labels, pod, strategy={"type": "Recreate"}
        )

    def workspace(self) -> dict[str, Any]:
        return {
            "load_from": [
                {"grpc_server": {"host": d["name"], "port": d["port"], "location_name": d["name"]}}
                for d in self.deployments
            ]
        }

    def manifests(self) -> list[Manifest]:
        home = CHART_DEFAULTS["dagster_home"]
        run_env = {
            "DAGSTER_HOME": home,
            "DAGSTER_K8S_PIPELINE_RUN_NAMESPACE": self.namespace,
            "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": f"{self.fullname}-pipeline-env",
        }
        out: list[Manifest] = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": self._meta(name)}
            for name in (self.service_account, self.user_deployments_service_account)
        ]
        out += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": self._meta(f"{self.fullname}-role"),
                "rules": [
                    {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": ["*"]},
                    {
                        "apiGroups": [""],
                        "resources": ["pods", "pods/log", "pods/status", "events"],
                        "verbs": ["*"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": self._meta(f"{self.fullname}-rolebinding"),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": f"{self.fullname}-role",
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": self.service_account,
                        "namespace": self.namespace,
                    }
                ],
            },
            self._config_map(
                self.instance_config_map, {"dagster.yaml": yaml.safe_dump(self.instance())}
            ),
            self._config_map(
                self.workspace_config_map, {"workspace.yaml": yaml.safe_dump(self.workspace())}
            ),
            self._config_map(f"{self.fullname}-daemon-env", {"DAGSTER_HOME": home}),
            self._config_map(f"{self.fullname}-pipeline-env", {"DAGSTER_HOME": home}),
            self._config_map(f"{self.fullname}-user-deployments-shared-env", run_env),
        ]
        for d in self.deployments:
            env = d.get("env")
            out.append(
                self._config_map(self.user_env_config_map(d), env if isinstance(env, dict) else {})
            )
            out += self._user_deployment(d)
        if self.values.get("dagsterDaemon", {}).get("enabled", True):
            out.append(self._daemon())
        return out
