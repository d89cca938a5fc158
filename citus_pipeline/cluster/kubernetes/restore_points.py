"""The record of restore points on Kubernetes: a ConfigMap beside the cluster's other objects.

It outlives every restore, as the local JSON file does. Each update replaces the ConfigMap at
the resourceVersion it was read at, so two writers at once cannot lose each other's point.
"""

from __future__ import annotations

from typing import Any

from ..restore_points import RestorePoint, dump, parse

KEY = "restore-points.json"


def _status(err: Exception) -> int | None:
    return getattr(err, "status", None)


class ConfigMapRestorePoints:
    """``RestorePointStore`` in the ConfigMap ``name`` of ``namespace``."""

    def __init__(self, core: Any, namespace: str, name: str, attempts: int = 5) -> None:
        self.core, self.namespace, self.name, self.attempts = core, namespace, name, attempts

    def _read(self) -> Any | None:
        try:
            return self.core.read_namespaced_config_map(self.name, self.namespace)
        except Exception as e:  # the client's ApiException, or a fake's
            if _status(e) == 404:
                return None
            raise

    def load(self) -> list[RestorePoint]:
        cm = self._read()
        return parse(((cm.data if cm else None) or {}).get(KEY, "[]"))

    def add(self, point: RestorePoint) -> None:
        for attempt in range(self.attempts):
            cm = self._read()
            points = parse(((cm.data if cm else None) or {}).get(KEY, "[]"))
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "data": {KEY: dump([*points, point])},
            }
            try:
                if cm is None:
                    self.core.create_namespaced_config_map(self.namespace, body)
                else:
                    body["metadata"]["resourceVersion"] = cm.metadata.resource_version
                    self.core.replace_namespaced_config_map(self.name, self.namespace, body)
                return
            except Exception as e:
                # 409: another writer came first; read again and retry on top of its point
                if _status(e) != 409 or attempt == self.attempts - 1:
                    raise


__all__ = ["KEY", "ConfigMapRestorePoints"]
