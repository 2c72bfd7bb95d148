"""The lab's parts are really there: these fail (not skip) when one cannot start."""


def test_metastore_answers(metastore):
    import hms
    with hms.hms_client(metastore.port) as c:
        assert "default" in c.get_all_databases()


def test_guard_is_ready_and_exports_metrics(passthrough_guard):
    status, body = passthrough_guard.http("/readyz")
    assert status == 200, body
    assert "hms_guard_build_info" in passthrough_guard.metrics()
