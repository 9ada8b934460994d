"""ApiContext: what every handler of one app server shares."""

import concurrent.futures

from core4.api import password, role, secret
from core4.mongo import SystemCollections


class ApiContext:
    """Configuration, system collections, secrets, the thread pool for
    blocking calls (database) and the pool of password checks of one app
    server.

    The database pool has ``threads`` threads plus one for each place of
    the password pool: an HTTP Basic login waits in a database thread for
    its password check, so even a full password pool leaves ``threads``
    threads to everyone else.
    """

    def __init__(self, config, threads=8):
        self.config = config
        self.system = SystemCollections(config)
        self.passwords = password.Checker.of_config(config)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            threads + self.passwords.capacity,
            thread_name_prefix="core4-api")
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
        """Stop the thread pools."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.passwords.close()
