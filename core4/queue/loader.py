"""Find a job class by its qualified name, with a distinct error for each
way that can go wrong."""

import importlib
import inspect

from core4.error import (CoreJobAbstract, CoreJobModuleNotFound,
                         CoreJobNotAJob, CoreJobNotFound)
from core4.queue.job import CoreJob


def load_job_class(name):
    """Return the :class:`CoreJob` subclass named ``module.Class``.

    Raises :class:`CoreJobModuleNotFound` (module missing),
    :class:`CoreJobNotFound` (no such attribute, or the module fails to
    import), :class:`CoreJobNotAJob` (not a CoreJob subclass) or
    :class:`CoreJobAbstract` (abstract job).
    """
    if inspect.isclass(name):
        cls = name
        name = getattr(cls, "__name__", repr(cls))
    else:
        if not isinstance(name, str) or "." not in name.strip(".") \
                or any(not part.isidentifier() for part in name.split(".")):
            raise CoreJobNotFound(
                "%r is not a qualified job name like 'package.module.Class'"
                % (name,))
        module_name, class_name = name.rsplit(".", 1)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(
                    exc.name + ".")):
                raise CoreJobModuleNotFound(
                    "job %s: module %s not found" % (name, exc.name)) \
                    from None
            raise CoreJobNotFound("job %s: importing %s failed: %s" % (
                name, module_name, exc)) from None
        except Exception as exc:
            raise CoreJobNotFound("job %s: importing %s failed: %s: %s" % (
                name, module_name, type(exc).__name__, exc)) from None
        try:
            cls = getattr(module, class_name)
        except AttributeError:
            raise CoreJobNotFound("job %s: module %s has no class %s" % (
                name, module_name, class_name)) from None
    if not (inspect.isclass(cls) and issubclass(cls, CoreJob)):
        raise CoreJobNotAJob("%s is not a core4 job (a subclass of "
                             "core4.queue.job.CoreJob)" % name)
    if cls.is_abstract():
        raise CoreJobAbstract("%s is an abstract job and cannot be enqueued"
                              % cls.qual_name())
    return cls


def make_job(name, /, **kwargs):
    """Load the job class, instantiate it with ``kwargs`` and validate it."""
    cls = load_job_class(name)
    job = cls(**kwargs)
    job.validate()
    return job
