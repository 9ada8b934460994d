"""ProxyHandler: forwards requests under a project container's root to
the app server that runs in the project's own environment."""

import tornado.httpclient
import tornado.httputil

from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler

_HOP = ("connection", "keep-alive", "transfer-encoding", "content-length",
        "te", "trailer", "upgrade", "proxy-authorization",
        "proxy-authenticate", "host")


class ProxyHandler(CoreRequestHandler):
    """Relays a request and streams the answer back (server-sent events
    included); authentication happens in the project's server."""

    public = True
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE",
                         "OPTIONS")

    async def prepare(self):
        """No authentication here: the target checks it."""

    def check_etag_header(self):
        """Let the target decide about caching."""
        return False

    async def _relay(self, *args):
        headers = {key: value for key, value in self.request.headers.get_all()
                   if key.lower() not in _HOP}
        headers["X-Forwarded-For"] = self.request.remote_ip
        body = self.request.body if self.request.method in (
            "POST", "PUT", "PATCH", "DELETE") else None
        request = tornado.httpclient.HTTPRequest(
            self.target + self.request.uri, method=self.request.method,
            headers=headers, body=body, follow_redirects=False,
            allow_nonstandard_methods=True, decompress_response=False,
            request_timeout=24 * 3600, connect_timeout=10,
            header_callback=self._on_header,
            streaming_callback=self._on_chunk)
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            await client.fetch(request, raise_error=False)
        except OSError as exc:
            raise ApiError(502, "project server at %s is unreachable: %s" % (
                self.target, exc))
        if not self._finished:
            self.finish()

    def _on_header(self, line):
        if line.startswith("HTTP/"):
            start = tornado.httputil.parse_response_start_line(line.strip())
            self.set_status(start.code, start.reason)
            self._clear_representation_headers()
            self.clear_header("Content-Type")
            return
        if not line.strip() or ":" not in line:
            return
        name, value = line.split(":", 1)
        if name.strip().lower() in _HOP:
            return
        self.add_header(name.strip(), value.strip())

    def _on_chunk(self, chunk):
        self.write(chunk)
        self.flush()

    get = head = post = put = patch = delete = options = _relay
