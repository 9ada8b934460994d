"""CoreDashboard: the container of the web dashboard, root ``""`` (``/``).

Routes (the app server sorts routes by root length, so the API at
``/core4/api/v1`` and project roots are never shadowed):

``/``
    the single-page app (views are addressed by the URL fragment, e.g.
    ``/#/job/<id>``, so no other page route is needed)
``/_dashboard/<version>/<file>``
    the static assets of :mod:`core4.api.dashboard.static`; ``version``
    is a hash of all assets, so they can be cached for good
``/_dashboard/session``
    who is logged in (200 also when nobody is: no 401 in the console)
``/_dashboard/stream/queue``
    server-sent ``queue`` events: state counts and a page of jobs, live
    (and ``unavailable`` events while the database is away)
``/_dashboard/health``
    whether the database answers (200, or 503 in an outage)

Every other path answers 404 in the JSON envelope.
"""

from core4.api.container import CoreApiContainer
from core4.api.dashboard import handler, stream


class CoreDashboard(CoreApiContainer):
    """core4's web dashboard: login, queue, jobs, daemons, users and
    roles."""

    root = ""
    rules = [
        ("/", handler.AppHandler),
        ("/_dashboard/session", handler.SessionHandler),
        ("/_dashboard/health", handler.HealthHandler),
        ("/_dashboard/stream/queue", stream.QueueStreamHandler),
        (r"/_dashboard/([0-9a-f]{12})/(.+)", handler.AssetHandler),
    ]
