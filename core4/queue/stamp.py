"""Documents a running job writes carry the job's ``_id`` and source.

While a job runs (:func:`running`), every collection read from the
configuration outside core4's own ``sys`` section, however it is reached
(``self.config.mypro.sales``, ``get_config("mypro").mypro.sales``, any
nesting), stamps the documents it writes with ``_job_id`` (the job's
``_id``) and ``_src`` (the job's current source, see
:meth:`core4.queue.job.CoreJob.set_source`)::

    def execute(self, **kwargs):
        sales = self.config.mypro.sales
        self.set_source("/data/sales-2024-01.csv")
        sales.insert_one({"amount": 5})    # + _job_id, _src "sales-2024-01.csv"

A write before the job set a source raises ``AttributeError("_id and _src
must not be None ...")``, as in the original core4. Stamped are
``insert_one``, ``insert_many``, ``update_one``, ``update_many``,
``replace_one`` (also upserts), ``find_one_and_update``,
``find_one_and_replace`` and ``bulk_write``. The pymongo collection itself
(:meth:`core4.config.Connect.connect`, :func:`core4.mongo.collection`) and
collections outside a running job are never stamped.
"""

import contextlib
import copy
from collections.abc import Mapping

import pymongo
import pymongo.collection

from core4.config import connect as connect_module

#: the fields every document written by a running job carries
JOB_ID, SOURCE = "_job_id", "_src"

_current = []          # the running job of this process (innermost last)
_stamped = {}          # (address, job id) -> StampedCollection


def current_job():
    """Return the job running in this process, or None."""
    return _current[-1] if _current else None


@contextlib.contextmanager
def running(job):
    """Stamp the writes of project collections with ``job`` while the
    block runs (the worker's job process and ``execute()`` run
    ``job.execute()`` inside it)."""
    _current.append(job)
    connect_module.set_collection_hook(_collection_for)
    try:
        yield job
    finally:
        _current.pop()
        _stamped.clear()
        if not _current:
            connect_module.set_collection_hook(None)


def _collection_for(connect, collection):
    """The collection attribute access on ``connect`` uses (the hook)."""
    job = current_job()
    if job is None or connect.is_system():
        return collection
    key = (connect._key(), id(job))
    stamped = _stamped.get(key)
    if stamped is None or stamped.job is not job:
        stamped = _stamped[key] = StampedCollection(collection, job)
    return stamped


def _stamp_update(update, fields):
    """Return ``update`` (operators or a pipeline) that also sets
    ``fields``."""
    if isinstance(update, (list, tuple)):
        return list(update) + [{"$set": dict(fields)}]
    stamped = {}
    for operator, spec in update.items():
        if operator != "$set" and isinstance(spec, Mapping) and any(
                name in spec for name in fields):
            spec = {k: v for k, v in spec.items() if k not in fields}
            if not spec:
                continue
        stamped[operator] = spec
    stamped["$set"] = dict(update.get("$set") or {}, **fields)
    return stamped


def _stamp_replacement(replacement, fields):
    return dict(replacement, **fields)


class StampedCollection(pymongo.collection.Collection):
    """A pymongo collection whose writes carry the ``_job_id`` and
    ``_src`` of ``job``."""

    def __init__(self, collection, job):
        super().__init__(
            collection.database, collection.name,
            codec_options=collection.codec_options,
            read_preference=collection.read_preference,
            write_concern=collection.write_concern,
            read_concern=collection.read_concern)
        self.__dict__["job"] = job

    def stamp(self):
        """Return the fields to add; raise AttributeError (as the
        original core4) while the job has no ``_id`` or no source."""
        job = self.job
        source = job.get_source()
        if job._id is None or source is None:
            raise AttributeError(
                "_id and _src must not be None: job %s must call "
                "self.set_source(<file name>) before it writes to %s"
                % (job.name, self.full_name))
        return {JOB_ID: job._id, SOURCE: source}

    def insert_one(self, document, *args, **kwargs):
        """pymongo's insert_one; ``document`` gets the job's fields."""
        document.update(self.stamp())
        return super().insert_one(document, *args, **kwargs)

    def insert_many(self, documents, *args, **kwargs):
        """pymongo's insert_many; each document gets the job's fields."""
        fields = self.stamp()
        documents = list(documents)
        for document in documents:
            document.update(fields)
        return super().insert_many(documents, *args, **kwargs)

    def update_one(self, filter, update, *args, **kwargs):
        """pymongo's update_one, also setting the job's fields."""
        return super().update_one(
            filter, _stamp_update(update, self.stamp()), *args, **kwargs)

    def update_many(self, filter, update, *args, **kwargs):
        """pymongo's update_many, also setting the job's fields."""
        return super().update_many(
            filter, _stamp_update(update, self.stamp()), *args, **kwargs)

    def replace_one(self, filter, replacement, *args, **kwargs):
        """pymongo's replace_one; the replacement gets the job's fields."""
        return super().replace_one(
            filter, _stamp_replacement(replacement, self.stamp()),
            *args, **kwargs)

    def find_one_and_update(self, filter, update, *args, **kwargs):
        """pymongo's find_one_and_update, also setting the job's fields."""
        return super().find_one_and_update(
            filter, _stamp_update(update, self.stamp()), *args, **kwargs)

    def find_one_and_replace(self, filter, replacement, *args, **kwargs):
        """pymongo's find_one_and_replace; the replacement gets the job's
        fields."""
        return super().find_one_and_replace(
            filter, _stamp_replacement(replacement, self.stamp()),
            *args, **kwargs)

    def bulk_write(self, requests, *args, **kwargs):
        """pymongo's bulk_write; inserted, updated and replaced documents
        get the job's fields (deletes are unchanged)."""
        fields = self.stamp()
        stamped = []
        for request in requests:
            # the operation classes keep their document in ``_doc``; a
            # copy is changed, never the caller's request
            if isinstance(request, pymongo.InsertOne):
                request._doc.update(fields)
            elif isinstance(request, (pymongo.UpdateOne, pymongo.UpdateMany)):
                request = copy.copy(request)
                request._doc = _stamp_update(request._doc, fields)
            elif isinstance(request, pymongo.ReplaceOne):
                request = copy.copy(request)
                request._doc = _stamp_replacement(request._doc, fields)
            stamped.append(request)
        return super().bulk_write(stamped, *args, **kwargs)
