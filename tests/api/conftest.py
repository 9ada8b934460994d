"""Fixtures of the API tests: one real app server (``coco --application``
on a free loopback port) and one real worker for the whole package, on a
database of their own; HTTP through ``requests`` (see
:mod:`tests.appserver`).

Tests share the server, so each uses its own job arguments or user names
(see :func:`unique`).
"""

import pytest

from tests.appserver import (ADMIN_PASSWORD, API, ApiServer, isolated_env,
                             start_app_server, stop_app_server, unique,
                             worker_for)

__all__ = ["ADMIN_PASSWORD", "API", "ApiServer", "unique"]


@pytest.fixture(scope="package")
def api_env(servers):
    """CORE4_OPTION_* environment of the package: database and home."""
    with isolated_env(servers, "api") as env:
        yield env


@pytest.fixture(scope="package")
def api(api_env):
    """The package's app server (``coco --application``)."""
    server = start_app_server(api_env)
    yield server
    stop_app_server(server)


@pytest.fixture(scope="package")
def api_worker(api, api_env):
    """A real worker on the app server's database."""
    with worker_for(api, "apiworker", api_env["base"]) as worker:
        yield worker
