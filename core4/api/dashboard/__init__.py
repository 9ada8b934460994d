"""The web dashboard of core4, served by ``coco --application`` at ``/``.

A single-page app of plain JavaScript modules and CSS shipped in
``static/`` (no build step, nothing fetched from elsewhere) that talks to
the REST API at ``/core4/api/v1`` with the login cookie. See
:class:`~core4.api.dashboard.container.CoreDashboard` for its routes.
"""
