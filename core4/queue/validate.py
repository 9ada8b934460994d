"""The job properties: where each may be set, and how each is validated.

Every property is settable as a class attribute (P), in the configuration at
the class's dotted path (C), and as an enqueue keyword (E), except where a
:class:`Property` says otherwise. Stored properties (S) are written to
``sys_queue``.
"""

import bson
import bson.errors
import croniter

from core4.error import CoreJobInvalid


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value):
    """Return an error text unless ``value`` is an int > 0."""
    if not (isinstance(value, int) and not isinstance(value, bool)
            and value > 0):
        return "must be an integer > 0"
    return None


def positive_number(value):
    """Return an error text unless ``value`` is a number > 0."""
    if not (_number(value) and value > 0):
        return "must be a number > 0"
    return None


def positive_number_or_none(value):
    """Return an error text unless ``value`` is None or a number > 0."""
    if value is None:
        return None
    return positive_number(value) and "must be a number > 0 or None"


def positive_int_or_none(value):
    """Return an error text unless ``value`` is None or an int > 0."""
    if value is None:
        return None
    return positive_int(value) and "must be an integer > 0 or None"


def integer(value):
    """Return an error text unless ``value`` is an int (not a bool)."""
    if not (isinstance(value, int) and not isinstance(value, bool)):
        return "must be an integer"
    return None


def boolean(value):
    """Return an error text unless ``value`` is a bool."""
    if not isinstance(value, bool):
        return "must be true or false"
    return None


def string_or_none(value):
    """Return an error text unless ``value`` is None or a non-empty str."""
    if value is None or (isinstance(value, str) and value.strip()):
        return None
    return "must be a non-empty string or None"


def string_list(value):
    """Return an error text unless ``value`` is a list of non-empty strs."""
    if not isinstance(value, (list, tuple)):
        return "must be a list of strings"
    for item in value:
        if not (isinstance(item, str) and item.strip()):
            return "must be a list of non-empty strings"
    return None


def cron_or_none(value):
    """Return an error text unless ``value`` is None or a cron expression."""
    if value is None:
        return None
    if not isinstance(value, str) or not croniter.croniter.is_valid(value):
        return "must be a valid cron expression (e.g. '0 * * * *') or None"
    return None


class Property:
    """A job property: its validator and where it may be set."""

    def __init__(self, check, enqueue=True, config=True, stored=True,
                 inherited=True, sequence=False):
        self.check = check
        self.enqueue = enqueue
        self.config = config
        self.stored = stored
        self.inherited = inherited
        self.sequence = sequence


PROPERTIES = {
    "attempts": Property(positive_int),
    "chain": Property(string_list, inherited=False, sequence=True),
    "defer_max": Property(positive_number),
    "defer_time": Property(positive_number),
    "dependency": Property(string_list, inherited=False, sequence=True),
    "error_time": Property(positive_number),
    "force": Property(boolean),
    "max_lost": Property(positive_int),
    "max_parallel": Property(positive_int_or_none),
    "priority": Property(integer),
    "progress_interval": Property(positive_number),
    "schedule": Property(cron_or_none, enqueue=False, stored=False,
                         inherited=False),
    "tag": Property(string_list, sequence=True),
    "wall_time": Property(positive_number_or_none),
    "worker": Property(string_or_none),
    "zombie_time": Property(positive_number),
}

#: values of properties that have no entry in the ``job`` config section
EMPTY = {"chain": [], "dependency": [], "tag": [], "schedule": None}


#: validators of the properties that must be numbers: a job class that
#: sets one of them to None explicitly gets None (a validation error, as
#: upstream core4), not the default (see :func:`explicit_none`)
NUMBER_CHECKS = (positive_int, positive_number, integer)


def explicit_none(cls, name):
    """True if the job class ``cls`` itself sets property ``name`` to None
    although it must be a number (``defer_time = None``): the job then has
    None, which validation refuses, unless the configuration or an enqueue
    keyword sets it."""
    return name in cls.__dict__ and cls.__dict__[name] is None and \
        PROPERTIES[name].check in NUMBER_CHECKS


def check_property(qual_name, name, value):
    """Raise :class:`CoreJobInvalid` naming the attribute and the value."""
    problem = PROPERTIES[name].check(value)
    if problem:
        raise CoreJobInvalid("%s: attribute %s %s, got %r" % (
            qual_name, name, problem, value))


def check_args(qual_name, args):
    """Raise :class:`CoreJobInvalid` unless ``args`` is a dict of str keys
    that MongoDB can store."""
    if not isinstance(args, dict):
        raise CoreJobInvalid("%s: args must be a dict, got %r" % (
            qual_name, args))
    for key in args:
        if not isinstance(key, str) or not key or key.startswith("$") \
                or "." in key:
            raise CoreJobInvalid(
                "%s: argument name %r must be a non-empty string without "
                "'$' prefix or '.'" % (qual_name, key))
    if _depth(args) > MAX_ARGS_DEPTH:
        raise CoreJobInvalid("%s: args are nested deeper than %d levels "
                             "(MongoDB stores at most 100 with the job)" % (
                                 qual_name, MAX_ARGS_DEPTH))
    try:
        bson.encode({"args": args})
    except (bson.errors.InvalidDocument, OverflowError, TypeError) as exc:
        raise CoreJobInvalid("%s: args cannot be stored: %s" % (
            qual_name, exc)) from None


#: nesting levels of args; the job document adds a few, MongoDB allows 100
MAX_ARGS_DEPTH = 64


def _depth(value, level=0):
    """Return the nesting depth of dicts and lists in ``value``."""
    if level > MAX_ARGS_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()] or
                   [level + 1])
    if isinstance(value, (list, tuple)):
        return max([_depth(v, level + 1) for v in value] or [level + 1])
    return level
