import logging
def test_caplog_after_airflow(airflow_env, caplog):
    import airflow  # noqa
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    caplog.set_level(logging.INFO)
    logging.getLogger("s3_postgres_copy.x").info("hello-probe")
    PostgresHook().get_records("select 1")
    assert "hello-probe" in caplog.text
    print(sorted({r.name for r in caplog.records}))
