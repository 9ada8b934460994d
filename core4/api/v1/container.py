"""CoreApiServer: the container of core4's REST API, root
``/core4/api/v1``."""

from core4.api.container import CoreApiContainer
from core4.api.v1 import (audit, follow, job, login, openapi, queue, role,
                          service)

ID = job.ID


class CoreApiServer(CoreApiContainer):
    """core4's REST API: login, jobs, queue, system, users and
    roles, the audit trail."""

    root = "/core4/api/v1"
    rules = [
        ("/login", login.LoginHandler),
        ("/logout", login.LogoutHandler),
        ("/profile", login.ProfileHandler),
        ("/job", job.JobHandler),
        ("/job/list", job.JobListHandler),
        ("/job/%s" % ID, job.JobDetailHandler),
        ("/job/%s/log" % ID, follow.JobLogHandler),
        ("/job/%s/stdout" % ID, follow.JobStdoutHandler),
        ("/job/%s/follow" % ID, follow.JobFollowHandler),
        ("/job/%s/kill" % ID, job.JobActionHandler, {"action": "kill"}),
        ("/job/%s/restart" % ID, job.JobActionHandler,
         {"action": "restart"}),
        ("/queue", queue.QueueHandler),
        ("/queue/history", queue.QueueHistoryHandler),
        ("/system", queue.SystemHandler),
        ("/system/maintenance", queue.MaintenanceHandler),
        ("/roles", role.RoleHandler),
        ("/roles/%s" % ID, role.RoleItemHandler),
        ("/audit", audit.AuditHandler),
        ("/service", service.ServiceListHandler),
        ("/service/%s" % ID, service.ServiceStopHandler),
        ("/openapi.json", openapi.OpenApiHandler),
    ]
