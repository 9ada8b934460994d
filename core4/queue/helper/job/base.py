"""Base classes for jobs (upstream compatible names), and
:class:`CoreLoadJob` for jobs that process files.

A load job takes the files arriving in ``folder.transfer/<project>``,
works on them in ``folder.process/<project>`` and keeps them, compressed,
in ``folder.archive/<project>/<stamp>``::

    from core4.queue.helper.job.base import CoreLoadJob

    class LoadSales(CoreLoadJob):
        author = "mra"

        def execute(self, **kwargs):
            for path in self.list_transfer(r".+\\.csv$"):
                work = self.move_proc(path)
                self.set_source(work)
                ...                                  # load it
                self.move_archive(work)
"""

import gzip
import os
import re
import shutil
import uuid

from core4.mongo import to_datetime
from core4.queue.job import CoreAbstractMixin, CoreJob

#: deprecated alias of :class:`core4.queue.job.CoreAbstractMixin`
CoreAbstractJobMixin = CoreAbstractMixin

#: sub folder of an archived file unless ``job.archive_stamp`` says
#: otherwise (filled from the job's ``started_at`` and ``_id``)
ARCHIVE_STAMP = "{year:04d}/{month:02d}/{day:02d}/{_id}"

__all__ = ["CoreAbstractMixin", "CoreAbstractJobMixin", "CoreLoadJob",
           "ARCHIVE_STAMP"]


class CoreLoadJob(CoreAbstractMixin, CoreJob):
    """An abstract job with helpers for the ``transfer``, ``process``,
    ``archive`` and ``temp`` folders (see :mod:`core4.config.folders`).

    ``base`` replaces the project name as the sub folder of ``transfer``,
    ``process`` and ``archive``.
    """

    # folders ----------------------------------------------------------------

    def _folder(self, key, base=None):
        return os.path.join(self.config.get_folder(key), base or self.project)

    def _list_files(self, key, pattern=None, base=None):
        folder = self._folder(key, base)
        if isinstance(pattern, str):
            pattern = re.compile(pattern)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(
            os.path.join(folder, name) for name in names
            if os.path.isfile(os.path.join(folder, name))
            and (pattern is None or pattern.match(name) is not None))

    def _make_file(self, folder, filename):
        path = os.path.join(folder, filename)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            self.logger.debug("make directory [%s]", parent)
            os.makedirs(parent, exist_ok=True)
        return path

    def _move(self, source, folder):
        """Move ``source`` into ``folder`` through a temporary name in the
        same folder, so readers never see half a file."""
        target = self._make_file(folder, os.path.basename(source))
        temporary = os.path.join(folder, ".%s.%s.part" % (
            os.path.basename(source), uuid.uuid4().hex))
        shutil.move(source, temporary)
        os.replace(temporary, target)
        return target

    # listing ----------------------------------------------------------------

    def list_transfer(self, pattern=None, base=None):
        """The sorted absolute paths of the files in
        ``folder.transfer/<project>`` whose name matches the regular
        expression ``pattern`` (text or compiled, matched from the start
        of the name; all files if None)."""
        return self._list_files("transfer", pattern, base)

    def list_proc(self, pattern=None, base=None):
        """As :meth:`list_transfer`, in ``folder.process/<project>``."""
        return self._list_files("process", pattern, base)

    # paths ------------------------------------------------------------------

    def make_transfer(self, filename, base=None):
        """The full path of ``filename`` (may hold sub folders) in
        ``folder.transfer/<project>``; its folders are created."""
        return self._make_file(self._folder("transfer", base), filename)

    def make_proc(self, filename, base=None):
        """As :meth:`make_transfer`, in ``folder.process/<project>``."""
        return self._make_file(self._folder("process", base), filename)

    def make_temp(self, filename=None, folder=False):
        """A path in ``folder.temp``: ``filename`` there (its folders
        created), or a fresh unique name if None; with ``folder=True`` the
        path is created as a directory."""
        root = self.config.get_folder("temp")
        if filename is None:
            filename = "%s-%s" % (self.project, uuid.uuid4().hex)
        path = self._make_file(root, filename)
        if folder:
            os.makedirs(path, exist_ok=True)
        return path

    # moving -----------------------------------------------------------------

    def move_transfer(self, source, base=None):
        """Move the file ``source`` into ``folder.transfer/<project>``;
        return its new path."""
        target = self._move(source, self._folder("transfer", base))
        self.logger.debug("moved [%s] into transfer: %s", source, target)
        return target

    def move_proc(self, source, base=None):
        """Move the file ``source`` into ``folder.process/<project>``;
        return its new path."""
        target = self._move(source, self._folder("process", base))
        self.logger.debug("moved [%s] into process: %s", source, target)
        return target

    def move_archive(self, source, compress=True, base=None):
        """Move the file ``source`` to
        ``folder.archive/<project>/<stamp>/<name>``, gzip-compressed with
        ``.gz`` unless ``compress`` is False; return its new path.

        ``<stamp>`` is config ``job.archive_stamp`` (default
        :data:`ARCHIVE_STAMP`) filled with ``year``, ``month``, ``day``,
        ``hour``, ``minute`` of the job's ``started_at`` and its ``_id``;
        a job that has not started raises RuntimeError.
        """
        started = to_datetime(self.started_at)
        if started is None or self._id is None:
            raise RuntimeError("archiving requires the job's started_at and "
                               "_id (a job that runs)")
        stamp = self.config.job.get("archive_stamp", ARCHIVE_STAMP)
        folder = self._folder("archive", base)
        if stamp:
            folder = os.path.join(folder, stamp.format(
                year=started.year, month=started.month, day=started.day,
                hour=started.hour, minute=started.minute, _id=str(self._id)))
        os.makedirs(folder, exist_ok=True)
        if not compress:
            target = self._move(source, folder)
        else:
            target = os.path.join(folder, os.path.basename(source) + ".gz")
            temporary = os.path.join(folder, ".%s.%s.part" % (
                os.path.basename(target), uuid.uuid4().hex))
            with open(source, "rb") as reader, \
                    gzip.open(temporary, "wb") as writer:
                shutil.copyfileobj(reader, writer)
            os.replace(temporary, target)
            os.unlink(source)
        self.logger.info("archived [%s]: %s", os.path.basename(source),
                         target)
        return target
