"""The lab's parts are really there: these error or fail (never skip) when one cannot start."""
import hms


def test_metastore_answers(metastore):
    with hms.hms_client(metastore.port) as c:
        assert "default" in c.get_all_databases()


def test_guard_is_ready_and_exports_metrics(passthrough_guard):
    status, body = passthrough_guard.http("/readyz")
    assert status == 200, body
    assert hms.metric_series(passthrough_guard.metrics(), "hms_guard_build_info")
