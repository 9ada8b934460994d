"""The job's recent low-level records, kept in memory for a failure.

When MongoDB logging is above DEBUG, the records of a job below that level
are not written to ``sys.log``. :class:`JobBuffer` keeps the most recent of
them per identifier (``logging.exception.capacity`` each) so that, when a
CRITICAL record of that identifier comes (the runner logs one when a job
fails), they are written before it: a failure always comes with context.

The buffer holds finished record documents (message already formatted), so
it keeps no reference to the objects a job logged. It is only used from
``MongoHandler.emit`` under the handler's lock and needs no lock itself.
"""

import collections

#: identifiers whose records are kept at the same time (least recently
#: logging identifiers are forgotten first)
MAX_IDENTIFIERS = 8


class JobBuffer:
    """Recent record documents per identifier, bounded in both dimensions."""

    def __init__(self, capacity, identifiers=MAX_IDENTIFIERS):
        self.capacity = int(capacity)
        self.identifiers = int(identifiers)
        self._buffers = collections.OrderedDict()

    def add(self, identifier, doc):
        """Keep ``doc`` as the latest record of ``identifier``."""
        buf = self._buffers.get(identifier)
        if buf is None:
            buf = collections.deque(maxlen=self.capacity)
            self._buffers[identifier] = buf
            while len(self._buffers) > self.identifiers:
                self._buffers.popitem(last=False)
        else:
            self._buffers.move_to_end(identifier)
        buf.append(doc)

    def pop(self, identifier):
        """Return and forget the kept records of ``identifier`` (oldest
        first)."""
        return list(self._buffers.pop(identifier, ()))

    def clear(self):
        """Forget everything (e.g. in a forked child)."""
        self._buffers.clear()

    def __len__(self):
        return sum(len(buf) for buf in self._buffers.values())
