"""The postgres fixtures give a real, writable server and isolated databases."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.postgres import PostgresServer


def _dsn(server: PostgresServer, sqlalchemy_url: str) -> str:
    return server.dsn_for(sqlalchemy_url.rsplit("/", 1)[1])


def test_server_stores_and_returns_rows(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    with psycopg.connect(_dsn(postgres_server, url)) as conn:
        conn.execute("CREATE TABLE jobs (id text PRIMARY KEY, attempt int NOT NULL)")
        conn.execute("INSERT INTO jobs VALUES (%s, %s), (%s, %s)", ("job_a", 1, "job_b", 2))
        conn.commit()
    with psycopg.connect(_dsn(postgres_server, url)) as conn:
        rows = conn.execute("SELECT id, attempt FROM jobs ORDER BY id").fetchall()
    assert rows == [("job_a", 1), ("job_b", 2)]


def test_new_databases_are_isolated(postgres_server: PostgresServer) -> None:
    first = postgres_server.new_database()
    second = postgres_server.new_database()
    assert first != second
    with psycopg.connect(_dsn(postgres_server, first)) as conn:
        conn.execute("CREATE TABLE only_in_first (x int)")
        conn.commit()
    with psycopg.connect(_dsn(postgres_server, second)) as conn:
        found = conn.execute("SELECT to_regclass('only_in_first')").fetchone()
    assert found == (None,)


def test_sqlalchemy_url_is_usable(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (v int)"))
            conn.execute(text("INSERT INTO t VALUES (41), (1)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT sum(v) FROM t")).scalar_one() == 42
    finally:
        engine.dispose()


def test_server_listens_only_on_loopback_with_test_settings(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn) as conn:
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('listen_addresses', 'fsync', 'max_connections')"
            ).fetchall()
        )
    assert settings == {"listen_addresses": "127.0.0.1", "fsync": "off", "max_connections": "200"}


def test_invalid_database_name_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="invalid test database name"):
        postgres_server.new_database('bad"; DROP DATABASE postgres; --')
