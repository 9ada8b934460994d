"""A job module whose own dependency is missing."""

import no_such_dependency_core4_test  # noqa: F401
