"""Services that ship with core4 (see :mod:`core4.queue.service`)."""

import os
import secrets
import sys

from core4.queue.service import CoreService


class HttpService(CoreService):
    """Serves a directory over HTTP (argument ``directory``, default the
    worker's current directory)."""

    author = "mra"
    health_path = ""

    def command(self, port, prefix, directory=None, **kwargs):
        """``python -m core4.queue.helper.httpserve``."""
        return [sys.executable, "-m", "core4.queue.helper.httpserve",
                "--port", port, "--address", self.address,
                "--prefix", prefix, os.path.abspath(directory or ".")]

    def execute(self, directory=None, **kwargs):
        """Serve ``directory`` until stopped."""
        if directory is not None and not os.path.isdir(directory):
            raise ValueError("directory %r does not exist" % directory)
        return super().execute(directory=directory, **kwargs)


class JupyterService(CoreService):
    """A Jupyter server (install ``core4[jupyter]``: ``jupyter_server`` and
    ``ipykernel`` in the environment the job runs in, the project's own
    ``.venv`` for a project's service). Argument ``notebook_dir`` (default:
    the worker's current directory). core4 generates the server's token
    and adds it to every request it relays, so users only log in to
    core4."""

    author = "mra"
    health_path = "api/status"
    start_timeout = 120

    def secret_token(self):
        """A fresh token for this run (stored encrypted with the job)."""
        token = self.__dict__.get("_jupyter_token")
        if token is None:
            token = self.__dict__["_jupyter_token"] = secrets.token_hex(24)
        return token

    def command(self, port, prefix, notebook_dir=None, **kwargs):
        """``python -m jupyter_server`` on ``port`` below ``prefix``."""
        root = ["--allow-root"] if os.geteuid() == 0 else []
        return [sys.executable, "-m", "jupyter_server", "--no-browser", *root,
                "--ip", self.address, "--port", port,
                "--ServerApp.port_retries=0",
                "--ServerApp.base_url=" + prefix,
                "--IdentityProvider.token=" + self.secret_token(),
                # the app server checks origins; the browser's Origin is
                # the app server's, not the one Jupyter listens on
                "--ServerApp.allow_origin=*",
                "--ServerApp.allow_remote_access=True",
                "--ServerApp.root_dir=" + os.path.abspath(notebook_dir or ".")]

    def execute(self, notebook_dir=None, **kwargs):
        """Run the Jupyter server until stopped."""
        try:
            import jupyter_server  # noqa: F401
        except ImportError:
            raise RuntimeError("jupyter_server is not installed in %s: "
                               "install core4[jupyter]" % sys.prefix) \
                from None
        return super().execute(notebook_dir=notebook_dir, **kwargs)
