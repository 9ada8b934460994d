"""The one small layer through which core4 talks to MongoDB.

Everything that touches pymongo goes through :mod:`core4.mongo.connection`
(clients, collections, error translation) and :mod:`core4.mongo.compat`
(the workarounds for gaps of the embedded NX-27017 server). A gap that is
fixed upstream is removed in one place.
"""

from core4.mongo.compat import (count, count_by, ensure_index, find_index,
                                id_in, now, seconds, elapsed, to_datetime,
                                from_datetime)
from core4.mongo.connection import (SystemCollections, get_client, collection,
                                    resolve_url, translate_errors, retrying)

__all__ = [
    "SystemCollections", "get_client", "collection", "resolve_url",
    "translate_errors", "retrying", "ensure_index", "find_index", "id_in", "now",
    "seconds", "elapsed",
    "to_datetime", "from_datetime", "count", "count_by",
]
