"""The contract of core4's REST API, one module per resource: the query
parameters and bodies the handlers read and check (see
:mod:`core4.api.schema`), the schemas of what they answer and the links
between operations. :mod:`core4.api.v1.spec` builds the OpenAPI document
from :data:`OPERATIONS` and :data:`SCHEMAS`."""

from core4.api.v1.contract import common, jobs, roles, system

#: per ``(handler class name, method)``: the operation's contract
OPERATIONS = {}
#: the named schemas (``#/components/schemas/<name>``)
SCHEMAS = {}
for _module in (common, jobs, roles, system):
    OPERATIONS.update(_module.OPERATIONS)
    SCHEMAS.update(_module.SCHEMAS)
