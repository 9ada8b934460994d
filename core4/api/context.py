"""ApiContext: what every handler of one app server shares."""

import concurrent.futures

from core4.api import role, secret
from core4.mongo import SystemCollections


class ApiContext:
    """Configuration, system collections, secrets and the thread pool for
    blocking calls of one app server."""

    def __init__(self, config, threads=8):
        self.config = config
        self.system = SystemCollections(config)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="core4-api")
        self.secrets = None
        self._queue = None

    def setup(self, announce_admin=True):
        """Load (or create) the secrets and the admin user."""
        self.secrets = secret.get_secrets(self.system)
        if announce_admin:
            role.ensure_admin(self.system, self.config)
        else:
            role.setup(self.system)

    @property
    def queue(self):
        """The :class:`~core4.queue.queue.CoreQueue` of this server."""
        if self._queue is None:
            from core4.queue.queue import CoreQueue
            self._queue = CoreQueue(self.config)
        return self._queue

    def close(self):
        """Stop the thread pool."""
        self.executor.shutdown(wait=False, cancel_futures=True)
