"""Permission strings and the checks made with them.

A user's permissions are the union of its own and those of every role it
has (roles may include roles). The strings are:

``cop``
    administrator: every permission.
``job://<regex>/r`` and ``job://<regex>/x``
    read (see, follow) or execute (enqueue, kill, restart, remove; implies
    read) the jobs whose qualified name matches ``<regex>`` from its start.
``api://<regex>[/<crud>]``
    call the request handlers whose qualified name matches ``<regex>``
    with the methods of the letters ``c`` (POST), ``r`` (GET, HEAD,
    OPTIONS), ``u`` (PUT, PATCH) and ``d`` (DELETE); no suffix means all.
``app://<regex>``
    open the web apps whose name matches ``<regex>``.
"""

import re

from core4.error import Core4UserError

ADMIN = "cop"
METHOD_LETTER = {"GET": "r", "HEAD": "r", "OPTIONS": "r", "POST": "c",
                 "PUT": "u", "PATCH": "u", "DELETE": "d"}
_SCHEMES = ("job", "api", "app")


class InvalidPermission(Core4UserError):
    """A permission string is malformed."""


def parse(text):
    """Return ``(scheme, compiled regex, letters)`` of one permission.

    Raise :class:`Core4UserError` naming the problem for a malformed one.
    """
    if not isinstance(text, str):
        raise InvalidPermission("permission %r is not a string" % (text,))
    if text == ADMIN:
        return ADMIN, None, ""
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in _SCHEMES:
        raise InvalidPermission(
            "permission %r is not cop, job://, api:// or app://" % text)
    letters = ""
    if scheme == "job":
        rest, sep, letters = rest.rpartition("/")
        if not sep or letters not in ("r", "x"):
            raise InvalidPermission(
                "permission %r must end in /r (read) or /x (execute)" % text)
    elif scheme == "api":
        head, sep, tail = rest.rpartition("/")
        if sep and tail and set(tail) <= set("crud"):
            rest, letters = head, tail
        else:
            letters = "crud"
    if not rest:
        raise InvalidPermission("permission %r has no name pattern" % text)
    try:
        pattern = re.compile(rest)
    except re.error as exc:
        raise InvalidPermission("permission %r: bad regular expression: %s"
                               % (text, exc)) from None
    return scheme, pattern, letters


def validate(permissions):
    """Return ``permissions`` (a list of strings) if all are well-formed."""
    if not isinstance(permissions, list):
        raise InvalidPermission("permissions must be a list of strings")
    for text in permissions:
        parse(text)
    return permissions


class Permissions:
    """The effective permissions of a user, ready to check."""

    def __init__(self, strings):
        self.strings = sorted(set(strings))
        self.admin = ADMIN in self.strings
        self._rules = []
        for text in self.strings:
            try:
                self._rules.append(parse(text))
            except Core4UserError:
                continue  # a stored bad string grants nothing

    def _match(self, scheme, name, letter):
        if self.admin:
            return True
        for rule_scheme, pattern, letters in self._rules:
            if (rule_scheme == scheme and letter in letters
                    and pattern.match(name)):
                return True
        return False

    def can_read_job(self, qual_name):
        """True if the user may see the job ``qual_name``."""
        return (self._match("job", qual_name, "r")
                or self._match("job", qual_name, "x"))

    def can_execute_job(self, qual_name):
        """True if the user may enqueue, kill, restart or remove the job."""
        return self._match("job", qual_name, "x")

    def can_call(self, handler_name, method):
        """True if the user may call ``method`` of the handler."""
        letter = METHOD_LETTER.get(method.upper())
        return letter is not None and self._match("api", handler_name,
                                                  letter)

    def can_open_app(self, name):
        """True if the user may open the web app ``name``."""
        return self._match("app", name, "")
