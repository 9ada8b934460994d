"""ProxyHandler: forwards requests under a project container's root to
the app server that runs in the project's own environment
(:mod:`core4.api.child`).

The answer is streamed back chunk by chunk as the project's server writes
it (server-sent events included), with back pressure: a slow client slows
the project's handler down instead of filling the app server's memory.
When the client goes away, the connection to the project's server is
closed, so its handler sees the client leave too. WebSocket upgrades are
not relayed.
"""

import tornado.httputil
import tornado.iostream
import tornado.tcpclient
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters

from core4.api import throttle
from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler

#: headers that belong to one connection, never relayed
_HOP = ("connection", "keep-alive", "transfer-encoding", "content-length",
        "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-authenticate", "proxy-connection", "expect")
#: headers the proxy sets itself (who the client is)
_FORWARDED = ("x-forwarded-for", "x-real-ip", "x-scheme",
              "x-forwarded-proto")
CONNECT_TIMEOUT = 10
_PARAMS = HTTP1ConnectionParameters(
    no_keep_alive=True, decompress=False, max_header_size=1 << 20,
    max_body_size=1 << 62)


def _reason(exc):
    """The cause of a connection error, in a few words."""
    exc = getattr(exc, "real_error", None) or exc
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class _Relay(tornado.httputil.HTTPMessageDelegate):
    """Hands the project server's answer to the :class:`ProxyHandler`."""

    def __init__(self, handler):
        self.handler = handler
        self.started = False
        self.finished = False

    def headers_received(self, start_line, headers):
        self.started = True
        self.handler.relay_headers(start_line, headers)

    def data_received(self, chunk):
        return self.handler.relay_chunk(chunk)

    def finish(self):
        self.finished = True

    def on_connection_close(self):
        pass


class ProxyHandler(CoreRequestHandler):
    """Relays a request to a project's server and streams the answer back;
    authentication happens in the project's server (same database, same
    secrets).

    Rule arguments: ``target`` (``http://127.0.0.1:<port>``) and
    ``project`` (its name, for error messages).
    """

    public = True
    openapi = False
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                         "OPTIONS")
    target = None
    project = None

    @classmethod
    def body_limit(cls, config):
        """``api.max_body``: the project's server applies its own limits
        (with the login it checks)."""
        return int(config.api.max_body)

    async def prepare(self):
        """No authentication here: the project's server checks it."""
        self._upstream = None
        self._gone = False

    def check_etag_header(self):
        """Let the project's server decide about caching."""
        return False

    def compute_etag(self):
        """The relayed answer is passed on as it is."""
        return None

    async def _relay(self, *args):
        host, _, port = self.target.rpartition("//")[2].rpartition(":")
        try:
            stream = await tornado.tcpclient.TCPClient().connect(
                host, int(port), timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            raise ApiError(502, "project %s does not answer at %s: %s" % (
                self.project, self.target, _reason(exc)))
        self._upstream = stream
        if self._gone:
            stream.close()
            return
        relay = _Relay(self)
        try:
            connection = HTTP1Connection(stream, True, _PARAMS)
            body = self.request.body
            connection.write_headers(tornado.httputil.RequestStartLine(
                self.request.method, self.request.uri, "HTTP/1.1"),
                self._request_headers(host, port, body))
            if body:
                await connection.write(body)
            connection.finish()
            await connection.read_response(relay)
        except (tornado.iostream.StreamClosedError, OSError,
                tornado.httputil.HTTPInputError) as exc:
            if not (self._gone or relay.started):
                raise ApiError(502, "project %s closed the connection: %s"
                               % (self.project, _reason(exc)))
        finally:
            stream.close()
        if self._gone:
            return
        if not relay.started:
            raise ApiError(502, "project %s sent no answer" % self.project)
        if not relay.finished:
            # cut off in the middle: the client must see it is incomplete
            self.request.connection.close()
            return
        if not self._finished:
            self.finish()

    def _request_headers(self, host, port, body):
        headers = tornado.httputil.HTTPHeaders()
        for key, value in self.request.headers.get_all():
            if key.lower() not in _HOP + _FORWARDED:
                headers.add(key, value)
        if "Host" not in headers:
            headers["Host"] = "%s:%s" % (host, port)
        headers["Connection"] = "close"
        if body or self.request.method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        # the client as this server believes it (api.trusted_proxies), not
        # as the client claims: the project's server trusts this server
        client = throttle.client_address(self)
        headers["X-Real-Ip"] = client
        headers["X-Forwarded-For"] = client
        headers["X-Scheme"] = "https" if throttle.is_tls(self) else "http"
        return headers

    def relay_headers(self, start_line, headers):
        """Take over status and headers of the project server's answer."""
        self.set_status(start_line.code, start_line.reason or None)
        self._clear_representation_headers()
        self.clear_header("Content-Type")
        seen = set()
        for name, value in headers.get_all():
            key = name.lower()
            if key in _HOP:
                continue
            if key in seen:
                self.add_header(name, value)
            else:
                self.set_header(name, value)
                seen.add(key)

    async def relay_chunk(self, chunk):
        """Pass a chunk on at once; wait until the client took it."""
        if self._gone:
            self._upstream.close()
            return
        self.write(chunk)
        try:
            await self.flush()
        except tornado.iostream.StreamClosedError:
            self._gone = True
            if self._upstream is not None:
                self._upstream.close()

    def on_connection_close(self):
        """The client left: close the connection to the project's server
        (its handler sees the client leave)."""
        self._gone = True
        if getattr(self, "_upstream", None) is not None:
            self._upstream.close()

    get = head = post = put = patch = delete = options = _relay
