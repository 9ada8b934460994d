"""Bounded work per request (issue 20): a wildcard search cannot stall the
app server, a large body is refused before it is read, and text that is
no text (a lone UTF-16 surrogate) answers 400. All with the package's
real app server."""

import concurrent.futures
import json
import socket
import threading
import time
import urllib.parse

import psutil
import pytest

from tests.api.conftest import API, unique
from tests.apijobs.client import NOOP

#: the search of the report: each added ``*?`` made it 3.5 times slower
WORST_SEARCH = "*?" * 9 + "Z"


@pytest.fixture
def registry(api):
    """Twenty valid jobs in the registry (``sys_job``) with names like the
    report's; removed after the test."""
    prefix = "tests.limits.%s.module" % unique("r")
    names = ["%s.SomeRegisteredJob%02d" % (prefix, i) for i in range(20)]
    api.db.sys_job.insert_many([
        {"_id": name, "name": name, "valid": True, "project": "tests",
         "author": "mra", "doc": "", "schedule": None, "tag": []}
        for name in names])
    yield names
    api.db.sys_job.delete_many({"_id": {"$in": names}})


def timed(call):
    """Return ``(result of call(), seconds it took)``."""
    began = time.monotonic()
    result = call()
    return result, time.monotonic() - began


def test_worst_search_is_fast_and_does_not_stall_an_admin(api, registry):
    _, stranger = api.create_user([])

    def search(token, text):
        return api.request("GET", API + "/job/list", token=token,
                           params={"search": text}, timeout=120)

    admin = api.admin
    waits = []
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        attack = pool.submit(timed, lambda: search(stranger, WORST_SEARCH))
        while not waits or not attack.done():  # an admin works meanwhile
            profile, waited = timed(lambda: api.request(
                "GET", API + "/profile", token=admin))
            assert profile.status_code == 200
            waits.append(waited)
        answer, took = attack.result()
    assert max(waits) < 1.0, "an admin request waited %.1f s" % max(waits)
    assert took < 1.0, "the search took %.1f s" % took
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == []
    # the wildcards still work (for a user who may execute the jobs)
    found = search(admin, "tests.limits.*SomeRegisteredJob?7").json()["data"]
    assert [doc["name"] for doc in found] == [registry[7], registry[17]]
    assert search(admin, "TESTS.LIMITS.*0?").json()["data"][0][
        "name"] == registry[0]
    # a search past the caps answers 400 with one message
    for text, message in (("a" * 201, "longer than 200"),
                          ("a*" * 17, "more than 16 runs of wildcards")):
        response = search(stranger, text)
        assert response.status_code == 400
        assert message in response.json()["message"]


def raw_request(api, method, path, length, headers=(), body=None):
    """Send ``method path`` announcing a body of ``length`` bytes over a
    plain socket, stream ``body`` (an iterable of bytes, default spaces)
    while reading the answer, and return ``(status, envelope)``; the body
    may be cut off when the server closes the connection."""
    parts = urllib.parse.urlsplit(api.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    head = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % parts.netloc,
            "Content-Type: application/json",
            "Content-Length: %d" % length] + list(headers)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())

    def stream():
        chunks = body if body is not None else (
            b" " * min(1 << 20, length - sent)
            for sent in range(0, length, 1 << 20))
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server closed the connection: what we expect
    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    received = b""
    try:
        while True:
            data = sock.recv(1 << 16)
            if not data:
                break
            received += data
            head_end = received.find(b"\r\n\r\n")
            if head_end >= 0:
                header = received[:head_end].decode("latin-1").lower()
                size = int(header.split("content-length:")[1].split()[0])
                if len(received) >= head_end + 4 + size:
                    break
    finally:
        sock.close()
        sender.join(60)
    head_end = received.find(b"\r\n\r\n")
    assert head_end >= 0, "no answer: %r" % received[:200]
    status = int(received.split(b" ", 2)[1])
    return status, json.loads(received[head_end + 4:])


def test_huge_login_body_is_refused_before_it_is_read(api):
    process = psutil.Process(api.process.pid)
    before = process.memory_info().rss
    size = 85 * 1024 * 1024
    opening = b'{"username": "admin", "password": "'
    body = [opening] + [b"a" * (1 << 20)] * 85
    status, answer = raw_request(api, "POST", API + "/login", size,
                                 body=body)
    assert status == 413, answer
    assert answer["code"] == 413
    assert "at most 65536 bytes" in answer["message"]
    grown = process.memory_info().rss - before
    assert grown < 30 * 1024 * 1024, "the app server grew %d MB" % (
        grown >> 20)
    # the server still answers
    assert api.request("GET", API + "/profile",
                       token=api.admin).status_code == 200


def test_job_arguments_are_limited_by_api_max_body(api):
    status, answer = raw_request(
        api, "POST", API + "/job", 2 * 1024 * 1024,
        headers=["Authorization: Bearer %s" % api.admin])
    assert status == 413, answer
    assert "at most 1048576 bytes" in answer["message"]
    # below the limit the body is taken (and large ones parsed off the loop)
    args = {"tag": unique(), "blob": "x" * 300_000}
    response = api.request("POST", API + "/job", token=api.admin,
                           json={"qual_name": NOOP, "args": args})
    assert response.status_code == 201, response.text
    api.request("DELETE", API + "/job/%s" % response.json()["data"]["_id"],
                token=api.admin)


def test_lone_surrogate_answers_400_without_an_error_log(api):
    logged = len(api.output())
    for path, token, body in (
            ("/login", None, b'{"username": "\\ud800", "password": "x"}'),
            ("/login", None, b'{"username": "\xed\xa0\x80", "password": 1}'),
            ("/job", api.admin, b'{"qual_name": "%s", "args": {"\\udfff": '
             b'1}}' % NOOP.encode())):
        response = api.request("POST", API + path, token=token, data=body,
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (body, response.text)
        message = response.json()["message"]
        assert "surrogate" in message or "not UTF-8" in message, message
    # a JSON argument in the query is checked the same way
    response = api.request("POST", API + "/job", token=api.admin, params={
        "qual_name": NOOP, "args": '{"tag": "\\ud800"}'})
    assert response.status_code == 400, response.text
    assert "surrogate" in response.json()["message"]
    later = api.output()[logged:]
    assert "ERROR" not in later and "Traceback" not in later, later
