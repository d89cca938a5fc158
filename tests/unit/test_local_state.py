"""cluster.json: which spec changes a state directory refuses, and which it takes."""

from __future__ import annotations

import pytest

from citus_pipeline.cluster.local.layout import Layout
from citus_pipeline.cluster.local.state import ClusterState
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import ClusterError


def _state(tmp_path, **spec) -> ClusterState:
    return ClusterState(Layout(spec_from_mapping(spec), tmp_path))


def _recorded(tmp_path) -> ClusterState:
    """A state dir whose cluster.json records the default spec."""
    made = _state(tmp_path)
    state = made.read()
    made.record_spec(state)
    made.save(state)
    return made


def test_a_changed_topology_is_refused_by_name(tmp_path):
    _recorded(tmp_path)
    with pytest.raises(ClusterError, match="field 'workers' changed"):
        _state(tmp_path, workers={"groups": 3}).check_same_topology()


def test_settings_outside_the_topology_may_change(tmp_path):
    _recorded(tmp_path)
    _state(tmp_path, metrics={"scrape_interval": 30}, shard_count=8).check_same_topology()


def test_a_field_added_to_the_spec_since_is_no_change(tmp_path):
    # a cluster made by an older release recorded its `local` section without the fields
    # added since (the metrics ports): their defaults are not a change of topology
    made = _state(tmp_path)
    state = made.read()
    made.record_spec(state)
    for added in ("exporter_port", "prometheus_address", "prometheus_port", "pooler_exporter_port"):
        del state["spec"]["local"][added]
    made.save(state)
    made.check_same_topology()
    with pytest.raises(ClusterError, match="field 'local' changed"):
        _state(tmp_path, local={"postgres_port": 6543}).check_same_topology()


def test_the_supervisor_may_be_turned_on_and_off(tmp_path):
    made = _recorded(tmp_path)
    assert "supervisor" not in made.read()["spec"]["local"]
    _state(tmp_path, local={"supervisor": False}).check_same_topology()
