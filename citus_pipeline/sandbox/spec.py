"""The cluster spec sized for the sandbox (`k8s sandbox spec` prints its path).

The default spec is Yandex Cloud's: 9 CPUs of requests, 7 × 100 Gi of `yc-network-ssd`, client
CIDRs of the three Yandex subnets, S3 archiving. Here three nodes share this machine's two
cores: small requests, the local-path StorageClass, the node network as the clients,
the exporter image built here, and no archiving (no S3 in the sandbox yet).
"""

from __future__ import annotations

from typing import Any

import yaml

from ..images.recipes import EXPORTER
from .addons import STORAGE_CLASS
from .layout import NODE_NETWORK, Layout

SMALL = {"cpu": "200m", "memory": "1Gi", "memory_limit": "2Gi"}


def sandbox_spec() -> dict[str, Any]:
    return {
        "backup": {"archiving": False},
        "kubernetes": {
            "storage_class": STORAGE_CLASS,
            "storage_size": "5Gi",
            "coordinator_resources": SMALL,
            "worker_resources": SMALL,
            "termination_grace_period_seconds": 30,
            # this machine and the nodes (MetalLB keeps the client's address: Local policy);
            # pods reach the members only as the NetworkPolicies say (members, Dagster)
            "client_cidrs": [str(NODE_NETWORK)],
            "exporter_image": EXPORTER.reference(),
            "pooler_resources": {"cpu": "50m", "memory": "32Mi", "memory_limit": "128Mi"},
        },
    }


def write_spec(layout: Layout) -> None:
    layout.spec_file.write_text(
        "# The cluster spec for `citus-pipeline k8s sandbox` (written by `sandbox up`).\n"
        + yaml.safe_dump(sandbox_spec(), sort_keys=False)
    )
