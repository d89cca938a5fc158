"""pgBackRest's configuration, its info, and the WAL arithmetic that decides whether a restore
point can be reached: pure functions, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from citus_pipeline.cluster import pgbackrest as pgbr
from citus_pipeline.cluster.pgbackrest import BackupInfo, PgTarget
from citus_pipeline.cluster.restore_points import GroupPosition, RestorePoint, check_name, find
from citus_pipeline.cluster.spec import spec_from_mapping
from citus_pipeline.errors import BackupError

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def backup(label, wal_start, lsn_stop, stopped=T0, error=False) -> BackupInfo:
    return BackupInfo(
        group=1,
        label=label,
        type="full",
        started=stopped - timedelta(seconds=5),
        stopped=stopped,
        size=1,
        repo_size=1,
        wal_start=wal_start,
        wal_stop=wal_start,
        lsn_start="0/0",
        lsn_stop=lsn_stop,
        error=error,
    )


def test_lsns_and_segment_names_round_trip():
    assert pgbr.parse_lsn("1/A000028") == (1 << 32) + 0xA000028
    assert pgbr.format_lsn(pgbr.parse_lsn("16/B374D848")) == "16/B374D848"
    assert pgbr.segment_name(1, pgbr.segment_of(pgbr.parse_lsn("1/A000028"))) == (
        "00000001000000010000000A"
    )
    assert pgbr.parse_segment_name("00000003000000020000000F") == (3, 2 * 256 + 15)


def test_a_timeline_path_follows_the_history_file():
    # timeline 3 left 2 at 0/9000100, which had left 1 at 0/5000000
    spans = pgbr.timeline_path(3, "1\t0/5000000\tno recovery target\n2\t0/9000100\tat RP1\n")
    assert [(s.timeline, s.begins_at) for s in spans] == [
        (1, 0),
        (2, 0x5000000),
        (3, 0x9000100),
    ]
    assert pgbr.timeline_at(spans, 4) == 1
    assert pgbr.timeline_at(spans, 5) == 2  # the switch segment is read from the new timeline
    assert pgbr.timeline_at(spans, 9) == 3
    assert pgbr.timeline_end(spans, 1) == 0x5000000 and pgbr.timeline_end(spans, 3) is None
    assert pgbr.timeline_path(1, None) == [pgbr.TimelineSpan(1, 0)]


def test_the_newest_backup_that_ends_before_the_point_on_its_path_is_chosen():
    spans = pgbr.timeline_path(2, "1\t0/9000100\tat RP1\n")
    old = backup("old", "000000010000000000000002", "0/2000100", T0 - timedelta(hours=2))
    mid = backup("mid", "000000010000000000000006", "0/6000100", T0 - timedelta(hours=1))
    # on timeline 1 but past the switch: timeline 2 never saw it
    gone = backup("gone", "00000001000000000000000A", "0/A000100", T0 - timedelta(minutes=30))
    bad = backup("bad", "000000010000000000000007", "0/7000100", T0, error=True)
    lsn = pgbr.parse_lsn("0/B000000")
    chosen = pgbr.choose_backup(1, [old, mid, gone, bad], spans, lsn, T0)
    assert chosen.label == "mid"
    # a point before every backup's end: refused, naming the group
    with pytest.raises(BackupError, match="^group 1: no backup ends before the point"):
        pgbr.choose_backup(1, [mid], spans, pgbr.parse_lsn("0/3000000"), T0)
    # a backup that ended after the point was taken cannot reach it either
    late = backup("late", "000000010000000000000006", "0/6000100", T0 + timedelta(seconds=1))
    with pytest.raises(BackupError):
        pgbr.choose_backup(1, [late], spans, lsn, T0)


def test_the_wal_needed_crosses_timelines_and_a_gap_is_found():
    spans = pgbr.timeline_path(2, "1\t0/9000100\tat RP1\n")
    b = backup("b", "000000010000000000000007", "0/7000100")
    needed = pgbr.wal_needed(b, spans, 0xA)
    assert needed == [
        "000000010000000000000007",
        "000000010000000000000008",
        "000000020000000000000009",
        "00000002000000000000000A",
    ]
    listing = [f"{n}-{'a' * 40}.lz4" for n in needed if not n.endswith("8")]
    archived = pgbr.archived_names([*listing, "00000002.history", "junk"])
    assert pgbr.missing_wal(needed, archived) == "000000010000000000000008"
    assert pgbr.missing_wal(needed, archived | {"000000010000000000000008"}) is None


def test_config_has_the_repository_of_the_spec_and_every_member_of_a_stanza():
    spec = spec_from_mapping(
        {"backup": {"repo_type": "s3", "retention_full": 3, "s3_bucket": "b1"}}
    )
    text = pgbr.render_config(
        spec,
        "/citusdemo",
        {"citusdemo-g1": [PgTarget("/d/1", "/s/1", 5432), PgTarget("/d/2", None, 5432)]},
        "/w",
    )
    lines = text.splitlines()
    for want in (
        "repo1-type=s3",
        "repo1-path=/citusdemo",
        "repo1-retention-full=3",
        "repo1-s3-bucket=b1",
        "repo1-s3-region=ru-central1",
        "repo1-s3-uri-style=path",
        "archive-async=y",
        "spool-path=/w/spool",
        "[citusdemo-g1]",
        "pg1-path=/d/1",
        "pg1-socket-path=/s/1",
        "pg2-path=/d/2",
        "pg2-user=postgres",
    ):
        assert want in lines
    assert not any(x.startswith("pg2-socket-path") for x in lines)
    assert not any("key" in x for x in lines)  # S3 keys come from the environment only
    assert pgbr.stanza(spec, 3) == "citusdemo-g3"


def test_info_json_is_read_per_group():
    entry = {
        "name": "citusdemo-g2",
        "status": {"code": 0, "message": "ok"},
        "archive": [
            {"id": "15-1", "min": "000000010000000000000001", "max": "00000002000000000000000C"}
        ],
        "db": [{"id": 1, "system-id": 7714745993434103921, "version": "15"}],
        "backup": [
            {
                "label": "20261202-163513F",
                "type": "full",
                "timestamp": {"start": 1764693313, "stop": 1764693316},
                "info": {"size": 32992905, "repository": {"size": 6565201}},
                "archive": {
                    "start": "000000010000000000000004",
                    "stop": "000000010000000000000004",
                },
                "lsn": {"start": "0/4000028", "stop": "0/4000100"},
                "error": False,
            }
        ],
    }
    info = pgbr.parse_info(2, entry)
    assert (info.status, info.archive_id, info.wal_max) == (
        "ok",
        "15-1",
        "00000002000000000000000C",
    )
    b = info.backups[0]
    assert (b.group, b.label, b.timeline, b.seconds, b.repo_size) == (
        2,
        "20261202-163513F",
        1,
        3.0,
        6565201,
    )


def test_restore_point_names_are_checked_and_unique():
    p = RestorePoint(
        name="RP1",
        created_at=T0,
        coordinator_lsn="0/1",
        groups={0: GroupPosition(lsn="0/2", wal_file="000000020000000000000001", system_id="1")},
    )
    assert p.groups[0].timeline == 2
    check_name("dagster-1a2b3c4d.publish", [p])
    for bad in ("", "-x", "a b", "x" * 64, "semi;colon"):
        with pytest.raises(BackupError, match="restore point name"):
            check_name(bad, [])
    with pytest.raises(BackupError, match="exists already"):
        check_name("RP1", [p])
    assert find([p], "RP1") is p
    with pytest.raises(BackupError, match="unknown restore point 'RP9' \\(latest: RP1\\)"):
        find([p], "RP9")


class _Rows:
    """What a coordinator returns for one run_command_on_all_nodes statement."""

    def __init__(self, rows):
        self.rows = rows

    def execute(self, sql):
        return self

    def fetchall(self):
        return self.rows


@pytest.mark.parametrize(
    "result",
    [
        "failed to connect to citus-w1:5432",  # Citus's own words (citus_tools.c)
        "query result unavailable",  # the connection broke mid-command: a CI failure once
        "connection lost",
        "failed to send query to citus-w1:5432",
        "FATAL:  terminating connection due to administrator command",
        "FATAL:  the database system is shutting down",
        "server closed the connection unexpectedly",
    ],
)
def test_a_group_lost_mid_leader_change_is_worth_another_attempt(result):
    from citus_pipeline.cluster import failover
    from citus_pipeline.cluster.restore_points import ARCHIVED_SQL, _per_group
    from citus_pipeline.errors import GroupUnreachable

    with pytest.raises(GroupUnreachable, match="^group 1: ") as err:
        _per_group(_Rows([(0, True, "a -"), (1, False, result)]), ARCHIVED_SQL)
    assert failover.is_transient(err.value)


def test_a_real_error_on_a_group_is_not_retried():
    from citus_pipeline.cluster import failover
    from citus_pipeline.cluster.restore_points import SWITCH_SQL, _per_group

    with pytest.raises(BackupError, match="group 2: ERROR:  permission denied") as err:
        _per_group(
            _Rows([(2, False, "ERROR:  permission denied for function pg_switch_wal")]),
            SWITCH_SQL,
        )
    assert not failover.is_transient(err.value)
