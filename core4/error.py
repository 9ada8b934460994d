"""Every exception core4 raises on purpose.

User mistakes derive from :class:`Core4UserError`: the command line and the
API turn them into one clear line (CLI exit code 2, API 4xx) instead of a
traceback.

The errors of loading and validating a job also derive from the built-in
classes upstream core4 raised, so code that catches those keeps working: a
job module that is missing or cannot be imported is an :class:`ImportError`,
an object that is not an enqueueable job class a :class:`TypeError`, an
invalid job an :class:`AssertionError`.
"""


class Core4Error(Exception):
    """Base class of all core4 errors."""


class Core4UserError(Core4Error):
    """A mistake of the user: bad input, unknown names, wrong state."""


class Core4ConfigurationError(Core4UserError):
    """Invalid configuration: names the file, the key and the expected type."""


class Core4UsageError(Core4UserError):
    """An API of core4 was used the wrong way (e.g. changing a frozen job)."""


class CoreJobNotFound(Core4UserError):
    """The job class or the job document does not exist."""


class CoreJobModuleError(CoreJobNotFound, ImportError):
    """The module part of a job's qualified name cannot be imported: it is
    not a module name, or importing it fails (an :class:`ImportError`)."""


class CoreJobModuleNotFound(CoreJobModuleError, ModuleNotFoundError):
    """The module part of a job's qualified name does not exist (a
    :class:`ModuleNotFoundError`)."""


class CoreJobNotAJob(Core4UserError, TypeError):
    """The object or qualified name is not a :class:`CoreJob` subclass (a
    :class:`TypeError`)."""


class CoreJobAbstract(Core4UserError, TypeError):
    """The job class is abstract and cannot be enqueued (a
    :class:`TypeError`)."""


class CoreJobInvalid(Core4UserError, AssertionError):
    """A job property has a wrong type or value, or the job has no author
    (an :class:`AssertionError`)."""


class CoreJobExists(Core4UserError):
    """A job with the same name and arguments is already in the queue."""


class CoreJobStateError(Core4UserError):
    """The job is not in a state that allows the requested operation."""


class CoreDatabaseError(Core4Error):
    """The MongoDB server cannot be reached or answered with an error."""


class CoreDatabaseUnreachable(CoreDatabaseError, Core4UserError):
    """The configured MongoDB server is unreachable (a clear, one-line error)."""


class CoreJobDeferred(Exception):
    """Raised by :meth:`CoreJob.defer` to postpone the job (not an error)."""
