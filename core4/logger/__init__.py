"""Logging for core4 objects and jobs.

Every logger is a child of ``core4`` and its records carry ``qual_name``,
``identifier`` (the job id inside a job), ``hostname`` and ``username``.
:func:`setup_logging` attaches the handlers ``config.logging`` asks for:
stderr, stdout and MongoDB (``sys.log``), each with its own level.

* :mod:`core4.logger.adapter` — :func:`get_logger` and the record fields
* :mod:`core4.logger.mongo` — the non-blocking ``sys.log`` handler
* :mod:`core4.logger.exception` — a job's recent DEBUG records, written
  when it fails
* :mod:`core4.logger.setup` — :func:`setup_logging`, :func:`flush_logging`,
  :func:`retarget_log_file`
* :mod:`core4.logger.query` — reading ``sys.log`` (``chist``, ``coco``)
"""

from core4.logger.adapter import ROOT, CoreLoggerAdapter, get_logger
from core4.logger.query import format_record, job_records
from core4.logger.setup import (flush_logging, mongo_handler, parse_level,
                                retarget_log_file, setup_logging)

__all__ = ["ROOT", "CoreLoggerAdapter", "get_logger", "setup_logging",
           "flush_logging", "mongo_handler", "parse_level", "job_records",
           "format_record", "retarget_log_file"]
