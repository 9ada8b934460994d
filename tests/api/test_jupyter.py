"""A real Jupyter server as a service job: started through the API, a
notebook created through its REST API and a cell run through its kernel's
WebSocket channel, both via core4's proxy with core4's login only."""

import json
import uuid

import tornado.httpclient
import tornado.ioloop
import tornado.websocket

from tests.api.conftest import API
from tests.api.test_service import running_service
from tests.apijobs.client import enqueue, wait_job

JUPYTER = "core4.queue.helper.job.service.JupyterService"


def execute_request(code, session):
    """A Jupyter ``execute_request`` message on the shell channel."""
    return {"header": {"msg_id": uuid.uuid4().hex, "username": "test",
                       "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False,
                        "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
            "buffers": []}


async def run_cell(url, token, code):
    """Run ``code`` in the kernel at ``url`` (ws://...); return what it
    printed."""
    request = tornado.httpclient.HTTPRequest(
        url, headers={"Authorization": "Bearer %s" % token},
        request_timeout=60, connect_timeout=60)
    conn = await tornado.websocket.websocket_connect(request)
    session = uuid.uuid4().hex
    message = execute_request(code, session)
    conn.write_message(json.dumps(message))
    printed = []
    replied = idle = False
    try:
        # the reply (shell channel) and the output (iopub) come in any
        # order; iopub's "idle" comes after the cell's output
        while not (replied and idle):
            raw = await conn.read_message()
            assert raw is not None, "the kernel channel closed"
            reply = json.loads(raw)
            if reply.get("parent_header", {}).get("msg_id") != \
                    message["header"]["msg_id"]:
                continue
            kind = reply.get("msg_type") or reply["header"]["msg_type"]
            if kind == "stream":
                printed.append(reply["content"]["text"])
            elif kind == "status":
                idle = reply["content"]["execution_state"] == "idle"
            elif kind == "execute_reply":
                assert reply["content"]["status"] == "ok", reply["content"]
                replied = True
        return "".join(printed)
    finally:
        conn.close()


def test_jupyter_server_through_the_proxy(api, api_worker, tmp_path):
    job = enqueue(api, JUPYTER, notebook_dir=str(tmp_path))
    entry = running_service(api, job["_id"])
    base = entry["path"]
    # a notebook, created through Jupyter's REST API
    response = api.request("POST", base + "api/contents", token=api.admin,
                           json={"type": "notebook"})
    assert response.status_code == 201, response.text
    created = response.json()["path"]
    assert (tmp_path / created).exists()
    # without core4's login the proxy refuses before Jupyter sees it
    assert api.request("GET", base + "api/contents").status_code == 401
    # a kernel, and a cell run through its WebSocket channel
    response = api.request("POST", base + "api/kernels", token=api.admin,
                           json={"name": "python3"})
    assert response.status_code == 201, response.text
    kernel = response.json()["id"]
    url = api.url.replace("http://", "ws://") + base + \
        "api/kernels/%s/channels" % kernel
    printed = tornado.ioloop.IOLoop.current().run_sync(
        lambda: run_cell(url, api.admin, "print(6 * 7)"), timeout=120)
    assert printed == "42\n"
    response = api.request("DELETE", API + "/service/%s" % job["_id"],
                           token=api.admin)
    assert response.status_code == 200, response.text
    wait_job(api, job["_id"], "killed", timeout=60)
