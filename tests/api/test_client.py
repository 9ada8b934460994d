"""A typed Python client generated from the OpenAPI document
(openapi-python-client) completes one enqueue → follow → detail round trip
against the live app server and its worker (the follow's events are
parsed by the test: the generator reads an event stream as one object)."""

import importlib
import json
import os
import subprocess
import sys

import pytest

from tests.api.conftest import API, unique
from tests.apijobs.client import events

DOC = API + "/openapi.json"
GENERATOR = os.path.join(os.path.dirname(sys.executable),
                         "openapi-python-client")
DUMMY = "core4.queue.helper.job.DummyJob"


@pytest.fixture(scope="module")
def client_package(api, tmp_path_factory):
    """The package ``core4_client`` generated from the served document
    (on ``sys.path`` while the module's tests run)."""
    folder = tmp_path_factory.mktemp("client")
    document = folder / "openapi.json"
    document.write_text(json.dumps(api.request("GET", DOC).json()))
    config = folder / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run
    result = subprocess.run(
        [GENERATOR, "generate", "--path", str(document), "--meta", "none",
         "--output-path", str(folder / "core4_client"), "--config",
         str(config)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("core4_client")
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n.startswith("core4_client")]:
            del sys.modules[name]


def test_generated_client_enqueues_follows_and_reads_a_job(
        api, api_worker, client_package):
    from core4_client import AuthenticatedClient
    from core4_client.api.default import enqueue_job, follow_job, get_job
    from core4_client.models import EnqueueJobBody, EnqueueJobBodyArgs
    client = AuthenticatedClient(base_url=api.url, token=api.admin,
                                 timeout=60)
    args = EnqueueJobBodyArgs.from_dict({"tag": unique()})
    created = enqueue_job.sync(client=client, body=EnqueueJobBody(
        qual_name=DUMMY, args=args))
    assert created.code == 201, created
    job = created.data
    assert job.state.value == "pending" and job.name.endswith("DummyJob")

    # the generated request of followJob, sent through the client's own
    # httpx client: openapi-python-client reads a text/event-stream body as
    # one object, so the events are parsed here
    request = follow_job._get_kwargs(job.field_id)
    stream = client.get_httpx_client().request(**request)
    assert stream.status_code == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    received = list(events(_Lines(stream.content)))
    assert received[-1][0] == "close"
    assert received[-1][1]["state"] == "complete"

    detail = get_job.sync(job.field_id, client=client)
    assert detail.code == 200
    assert detail.data.field_id == job.field_id
    assert detail.data.state.value == "complete"
    assert detail.data.journaled is True
    assert detail.data.flags.removed is False


class _Lines:
    """The body of a finished event stream, as :func:`events` reads a
    streaming response."""

    def __init__(self, content):
        self.content = content

    def iter_lines(self, decode_unicode=True):
        """Yield the lines of the body."""
        yield from self.content.decode("utf-8").splitlines()
