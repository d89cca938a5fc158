"""KubernetesCluster's switchovers, member restarts and group configuration, written where
Patroni's Kubernetes DCS looks for them (fake API classes: kube_fakes).
"""

from __future__ import annotations

import json

import pytest
from kube_fakes import (
    endpoints,
    make,
    no_dsn_env,  # noqa: F401 -- an autouse fixture: no test here sees the caller's DSN
)

from citus_pipeline.errors import KubernetesClusterError


# ---- switchover -------------------------------------------------------------------------------
def test_switchover_writes_patronis_failover_endpoint():
    c, log, *_ = make()
    assert c.switchover(1) == "citusdemo-1-1"
    patch = next(e for e in log if e[0] == "patch")
    assert patch[2] == "citusdemo-1-failover"
    ann = patch[3]["metadata"]["annotations"]
    assert (ann["leader"], ann["member"]) == ("citusdemo-1-0", "citusdemo-1-1")
    assert patch[3]["metadata"]["labels"]["citus-group"] == "1"


def test_a_rolling_restart_deletes_the_standbys_pods_then_switches_over_then_the_leader():
    from citus_pipeline.cluster.rolling import rolling_restart

    c, log, core, *_ = make(groups=(0, 1))
    for p in core.pods:  # a parameter that needs a restart changed in group 1's DCS config
        if p.metadata.name.startswith("citusdemo-1-"):
            st = json.loads(p.metadata.annotations["status"])
            p.metadata.annotations["status"] = json.dumps({**st, "pending_restart": True})
    done = rolling_restart(c, pending_only=True)
    assert done == ["citusdemo-1-1", "citusdemo-1-0"]
    steps = [(e[0], e[2]) for e in log if e[0] in ("delete", "patch")]
    assert steps == [
        ("delete", "citusdemo-1-1"),
        ("patch", "citusdemo-1-failover"),
        ("delete", "citusdemo-1-0"),
    ]
    assert not any(m.pending_restart for m in c.status(with_shards=False).members)


def test_a_member_whose_pod_does_not_come_back_is_named_with_what_was_seen():
    c, log, core, *_ = make(groups=(0, 1))
    core.delete_namespaced_pod = lambda name, namespace: log.append(("delete", "Pod", name))
    with pytest.raises(KubernetesClusterError, match="citusdemo-1-1 not running again 0s"):
        c.restart_member("citusdemo-1-1", timeout=0)
    with pytest.raises(KubernetesClusterError, match="no pod citusdemo-1-9"):
        c.restart_member("citusdemo-1-9")


def test_a_group_config_change_merges_into_patronis_annotation():
    c, log, core, *_ = make(groups=(0, 1))
    core.eps = [e for e in core.eps if e.metadata.name != "citusdemo-1-config"]
    core.eps.append(
        endpoints(
            "citusdemo-1-config",
            1,
            {"config": json.dumps({"ttl": 20, "postgresql": {"parameters": {"a": 1, "b": 2}}})},
        )
    )
    c.set_group_config(1, {"postgresql": {"parameters": {"b": None, "c": 3}}})
    patch = next(e for e in log if e[0] == "patch")
    written = json.loads(patch[3]["metadata"]["annotations"]["config"])
    assert written == {"ttl": 20, "postgresql": {"parameters": {"a": 1, "c": 3}}}


def test_switchover_to_a_stranger_is_refused():
    c, log, *_ = make()
    with pytest.raises(KubernetesClusterError, match="not a member of group 1"):
        c.switchover(1, "citusdemo-2-1")
    assert log == []
