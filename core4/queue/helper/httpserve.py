"""``python -m core4.queue.helper.httpserve``: serve a directory over HTTP
below a path prefix (the server of
:class:`core4.queue.helper.job.service.HttpService`)::

    python -m core4.queue.helper.httpserve --port 8080 --prefix /x/ DIR
"""

import argparse
import functools
import http.server
import os
import sys
import urllib.parse


class PrefixHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files of the directory below ``prefix``; 404 elsewhere."""

    prefix = "/"

    def translate_path(self, path):
        """Map ``prefix/a/b`` to ``directory/a/b``."""
        parsed = urllib.parse.urlsplit(path).path
        if not parsed.startswith(self.prefix):
            return os.path.join(self.directory, "\0missing")
        return super().translate_path("/" + parsed[len(self.prefix):])

    def log_message(self, format, *args):  # noqa: A002 - tornado's name
        """One line per request on stderr (the job's captured output)."""
        sys.stderr.write("%s %s\n" % (self.address_string(), format % args))


def main(argv=None):
    """Serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--prefix", default="/")
    parser.add_argument("directory")
    ns = parser.parse_args(argv)
    if not os.path.isdir(ns.directory):
        parser.error("%s is not a directory" % ns.directory)
    handler = type("Handler", (PrefixHandler,), {"prefix": ns.prefix})
    server = http.server.ThreadingHTTPServer(
        (ns.address, ns.port),
        functools.partial(handler, directory=ns.directory))
    server.serve_forever()


if __name__ == "__main__":
    main()
