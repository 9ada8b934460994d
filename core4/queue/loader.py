"""Find a job class by its qualified name, with a distinct error for each
way that can go wrong (each also the built-in class upstream core4 raised,
see :mod:`core4.error`)."""

import importlib
import inspect

from core4.error import (CoreJobAbstract, CoreJobModuleError,
                         CoreJobModuleNotFound, CoreJobNotAJob,
                         CoreJobNotFound)
from core4.queue.job import CoreJob


def load_job_class(name):
    """Return the :class:`CoreJob` subclass named ``module.Class`` (or
    given as a class).

    Raises :class:`CoreJobModuleNotFound` (module missing) or
    :class:`CoreJobModuleError` (not a module name, or the module fails to
    import), both an :class:`ImportError`; :class:`CoreJobNotFound` (no
    module part, no such attribute); :class:`CoreJobNotAJob` (an object or
    class that is not a CoreJob subclass) or :class:`CoreJobAbstract`
    (abstract job), both a :class:`TypeError`.
    """
    if inspect.isclass(name):
        cls = name
        name = getattr(cls, "__name__", repr(cls))
    elif not isinstance(name, str):
        raise CoreJobNotAJob("%r is not a core4 job class or a qualified job "
                             "name" % (name,))
    else:
        cls = _import_class(name)
    if not (inspect.isclass(cls) and issubclass(cls, CoreJob)):
        raise CoreJobNotAJob("%s is not a core4 job (a subclass of "
                             "core4.queue.job.CoreJob)" % name)
    if cls.is_abstract():
        raise CoreJobAbstract("%s is an abstract job and cannot be enqueued"
                              % cls.qual_name())
    return cls


def _import_class(name):
    """Import the module of the qualified name ``name`` and return what it
    binds to the class name."""
    wrong = "%r is not a qualified job name like 'package.module.Class'" % (
        name,)
    if "." not in name.strip("."):
        raise CoreJobNotFound(wrong)
    module_name, class_name = name.rsplit(".", 1)
    if any(not part.isidentifier() for part in module_name.split(".")):
        raise CoreJobModuleError(wrong)
    if not class_name.isidentifier():
        raise CoreJobNotFound(wrong)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(
                exc.name + ".")):
            raise CoreJobModuleNotFound(
                "job %s: module %s not found" % (name, exc.name)) from None
        raise CoreJobModuleError("job %s: importing %s failed: %s" % (
            name, module_name, exc)) from None
    except Exception as exc:
        raise CoreJobModuleError("job %s: importing %s failed: %s: %s" % (
            name, module_name, type(exc).__name__, exc)) from None
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise CoreJobNotFound("job %s: module %s has no class %s" % (
            name, module_name, class_name)) from None


def make_job(name, /, **kwargs):
    """Load the job class, instantiate it with ``kwargs`` and validate it."""
    cls = load_job_class(name)
    job = cls(**kwargs)
    job.validate()
    return job
