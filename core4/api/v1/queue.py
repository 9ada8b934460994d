"""The queue summary, its history, the daemons and maintenance."""

import datetime

from core4.api.errors import ApiError
from core4.api.handler import CoreRequestHandler
from core4.api.v1.contract.system import HISTORY, MAINTENANCE, MAX_BUCKETS
from core4.mongo import (count as count_matching, count_by, elapsed, now,
                         to_datetime)
from core4.queue import states
from core4.queue.daemon import alive_daemons

#: how each event changes the number of jobs in the queue
QUEUE_CHANGE = {"enqueue_job": 1, "complete_job": -1, "remove_job": -1,
                "remove_hard_job": -1}


class QueueHandler(CoreRequestHandler):
    """``GET /queue``: jobs in the queue by state, and by name and state
    (names the user may not read are summed as ``UnauthorizedJob``)."""

    access = "user"

    async def get(self):
        """Answer ``{total, state: {..}, name: [{name, state, n}]}``."""
        groups = await self.run(count_by, self.context.system.queue,
                                ["name", "state"])
        by_state = {state: 0 for state in states.ALL}
        by_name = {}
        total = 0
        for (name, state), n in groups.items():
            total += n
            by_state[state] = by_state.get(state, 0) + n
            if not self.permissions.can_read_job(name):
                name = "UnauthorizedJob"
            by_name[(name, state)] = by_name.get((name, state), 0) + n
        self.reply({"total": total, "state": by_state,
                    "name": [{"name": name, "state": state, "n": n}
                             for (name, state), n in sorted(
                                 by_name.items())]})


class QueueHistoryHandler(CoreRequestHandler):
    """``GET /queue/history``: per time bucket, the job events (enqueued,
    started, completed, failed, ...) and the number of jobs in the queue
    at the bucket's end, reconstructed from the events and today's count.

    Arguments: ``since`` (default one hour ago), ``until`` (default now),
    ``interval`` seconds per bucket (default: about 60 buckets).
    """

    access = "user"

    async def get(self):
        """Answer ``[{at, size, events: {name: n}}]`` oldest first."""
        since_param, until_param, interval_param = HISTORY
        until = self.param(until_param) or now()
        since = self.param(since_param)
        if since is None:
            try:
                since = until - datetime.timedelta(hours=1)
            except OverflowError:
                raise ApiError(400, "until %s is too early" % (
                    until.isoformat(),), field="until") from None
        if since >= until:
            raise ApiError(400, "since must be before until", field="since")
        span = (until - since).total_seconds()
        interval = self.param(interval_param) or max(1.0, span / 60)
        if span / interval > MAX_BUCKETS:
            raise ApiError(400, "interval must be positive and give at "
                           "most %d buckets" % MAX_BUCKETS, field="interval")
        interval = min(interval, span)  # one bucket at most spans it all
        buckets = await self.run(self._history, since, until, interval)
        self.reply(buckets)

    def _history(self, since, until, interval):
        system = self.context.system
        size_now = count_matching(system.queue)
        count = int(-(-(until - since).total_seconds() // interval))
        span = (until - since).total_seconds()
        buckets = [{"at": (since + datetime.timedelta(seconds=min(
            span, interval * (i + 1)))).isoformat(), "events": {},
            "size": 0} for i in range(count)]
        change_after = [0] * count
        later = 0
        for event in system.event.find(
                {"channel": "queue", "created": {"$gte": since}},
                {"name": 1, "created": 1}):
            created = to_datetime(event["created"])
            if created < since:
                continue  # NX-27017 compares datetimes by whole seconds
            delta = QUEUE_CHANGE.get(event["name"], 0)
            if created > until:
                later += delta
                continue
            index = min(count - 1, int(
                (created - since).total_seconds() // interval))
            names = buckets[index]["events"]
            names[event["name"]] = names.get(event["name"], 0) + 1
            change_after[index] += delta
        size = size_now - later
        for index in range(count - 1, -1, -1):
            buckets[index]["size"] = max(0, size)
            size -= change_after[index]
        return buckets


class SystemHandler(CoreRequestHandler):
    """``GET /system``: live daemons (workers, schedulers, app servers)
    and the maintenance mode."""

    access = "user"

    async def get(self):
        """Answer ``{daemons: [...], maintenance: {...}}``."""
        def collect():
            config = self.context.config
            daemons = alive_daemons(self.context.system, config)
            at = now()
            for doc in daemons:
                doc["heartbeat_age"] = max(0.0, elapsed(
                    doc.get("heartbeat") or at, at))
            return {"daemons": daemons,
                    "maintenance": self.context.queue.maintenance()}
        self.reply(await self.run(collect))


class MaintenanceHandler(CoreRequestHandler):
    """``PUT /system/maintenance``: pause or resume claims of all jobs
    (``{"paused": true}``) or of one project (``{"project": "mypro",
    "paused": true}``); administrators only."""

    access = "admin"

    async def put(self):
        """Change the maintenance mode; answer the new mode."""
        fields = self.body(MAINTENANCE)
        paused, project = fields["paused"], fields.get("project")
        queue = self.context.queue
        await self.run(queue.pause if paused else queue.resume, project,
                       by=self.user["name"])
        self.reply(await self.run(queue.maintenance))
