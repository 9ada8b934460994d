"""``GET /metrics``: Prometheus metrics of the queue, the jobs and the
daemons, in the Prometheus text format (or OpenMetrics, if the scraper
asks for it), made by :mod:`prometheus_client` from a private registry
holding one :class:`QueueCollector` (no metrics of the app server's own
process).

Configured in ``api.metrics``: ``enabled`` (default false: the route does
not exist, 404), ``public`` (true: anyone may scrape; false, the default:
a login is needed, with ``api://core4.api.metrics.MetricsHandler/r`` or
``cop``), ``lag``, ``batch`` and ``max_time`` (see below).

Everything is read from the database, so every app server of one
installation answers the same:

``core4_queue_jobs{state}`` (gauge)
    jobs in ``sys_queue`` per state (one aggregation).
``core4_daemons_alive{kind}`` (gauge)
    daemons in ``sys_worker`` (``worker``, ``scheduler``, ``app``) whose
    heartbeat is younger than ``daemon.alive_timeout`` and which did not
    exit.
``core4_worker_claims_total{worker,outcome}`` (counter)
    claims each alive worker won and lost (``outcome``: ``won``,
    ``lost``) since it started, as of its last heartbeat: a worker that
    keeps losing claims competes with others for the same jobs (see
    *Sharing jobs out* in the concepts).
``core4_jobs_started_total{name}``, ``core4_jobs_completed_total{name}``,
``core4_jobs_failed_total{name}``, ``core4_leases_recovered_total{name}``
(counters)
    the job events in ``sys_event`` since metrics were first scraped:
    ``start_job`` (a worker launched a trial), ``complete_job``,
    ``failed_job`` and ``error_job`` (a trial raised; ``error``: no
    attempt left), ``recover_job`` (a live worker recovered a job whose
    worker's lease expired).
``core4_job_claim_latency_seconds`` (histogram)
    per started trial, from the moment the job was due (its ``query_at``:
    enqueued, released by its dependencies, due for its retry) to its
    claim (``started_at``).
``core4_job_dispatch_latency_seconds`` (histogram)
    per started trial, from its claim (``started_at``) to the launch of its
    process (the ``start_job`` event).
``core4_metrics_counted_until_timestamp_seconds`` (gauge)
    events up to this time are in the counters and histograms.
``core4_metrics_scrape_error{part}`` (gauge)
    1 if a part (``queue``, ``daemons``, ``events``) was left out of this
    answer because its query failed or took longer than ``max_time``.

How the counters stay the same on every app server: the running totals
are one document in ``sys_event`` (``_id: "__metrics__"``, without
``created``, so the TTL index leaves it alone). A scrape counts the events
created after its ``upto`` and at least ``lag`` seconds ago (workers write
their events in batches; an event written more than ``lag`` seconds after
it happened is not counted), at most ``batch`` of them (a backlog is
counted over the next scrapes), and stores the new totals with a
compare-and-set on a sequence number: each event is counted once, however
many app servers are scraped. Events older than ``event.ttl`` that were
never counted (no scrape for that long) are gone; the first scrape starts
at zero. Every query is bounded by ``max_time`` (``maxTimeMS``) and a
limit.
"""

import datetime
import logging

import pymongo
import pymongo.errors
import tornado.web
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from core4.api.handler import CoreRequestHandler
from core4.error import Core4UserError
from core4.mongo import now, seconds, to_datetime
from core4.queue import states
from core4.queue.daemon import CONTROL_IDS

PATH = "/metrics"
#: ``_id`` of the running totals in ``sys_event``
STATE_ID = "__metrics__"
#: counted events and the counter each one adds to
COUNTED = {"start_job": "started", "complete_job": "completed",
           "failed_job": "failed", "error_job": "failed",
           "recover_job": "recovered"}
#: the per-name counters: (key in the state document, metric, help)
COUNTERS = (
    ("started", "core4_jobs_started",
     "Job trials launched by a worker (start_job events)."),
    ("completed", "core4_jobs_completed",
     "Jobs completed (complete_job events)."),
    ("failed", "core4_jobs_failed",
     "Job trials that raised (failed_job and error_job events)."),
    ("recovered", "core4_leases_recovered",
     "Jobs recovered after their worker's lease expired (recover_job "
     "events)."),
)
#: upper bounds (seconds) of the latency histograms' buckets
CLAIM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                 900.0, 3600.0)
DISPATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HISTOGRAMS = (
    ("claim", "core4_job_claim_latency_seconds", CLAIM_BUCKETS,
     "Seconds from a job being due (query_at) to its claim (started_at), "
     "per trial."),
    ("dispatch", "core4_job_dispatch_latency_seconds", DISPATCH_BUCKETS,
     "Seconds from a job's claim (started_at) to the launch of its process "
     "(start_job event), per trial."),
)
#: daemon kinds always reported (0 if none is alive)
DAEMON_KINDS = ("worker", "scheduler", "app")
BUCKETS = {key: buckets for key, _, buckets, _ in HISTOGRAMS}
#: most daemon documents read per scrape
MAX_DAEMONS = 10000
#: compare-and-set attempts per scrape before the totals read are served
CAS_ATTEMPTS = 3

log = logging.getLogger("core4.api.metrics")


class MetricsSettings:
    """The ``api.metrics`` configuration, checked."""

    def __init__(self, config):
        node = config.api.metrics or {}
        self.enabled = node.get("enabled", False)
        self.public = node.get("public", False)
        self.lag = node.get("lag", 10)
        self.batch = node.get("batch", 10000)
        self.max_time = node.get("max_time", 2000)
        for key in ("enabled", "public"):
            if not isinstance(getattr(self, key), bool):
                raise Core4UserError("api.metrics.%s must be true or false"
                                     % key)
        for key in ("lag", "batch", "max_time"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(
                    value, (int, float)) or value < 0 or (
                    key != "lag" and value < 1):
                raise Core4UserError("api.metrics.%s must be a positive "
                                     "number, not %r" % (key, value))
        self.batch = int(self.batch)
        self.max_time = int(self.max_time)


# the running totals ---------------------------------------------------------

def new_state(upto):
    """Return the totals document of a first scrape: nothing counted, events
    counted from ``upto`` on."""
    return {"_id": STATE_ID, "seq": 0, "upto": upto, "jobs": [],
            "histograms": {key: {"counts": [0] * (len(buckets) + 1),
                                 "sum": 0.0}
                           for key, _, buckets, _ in HISTOGRAMS}}


def bucket_index(buckets, value):
    """Return the index of the bucket of ``value`` (``len(buckets)``:
    +Inf)."""
    for index, bound in enumerate(buckets):
        if value <= bound:
            return index
    return len(buckets)


class EventCounter:
    """Counts the job events of ``sys_event`` into the running totals (see
    the module's documentation)."""

    def __init__(self, system, settings):
        self.system = system
        self.settings = settings

    def advance(self, at=None):
        """Count the events that are due and return the totals document
        (the one stored, or, if other app servers kept changing it, the
        latest one read)."""
        at = at or now()
        until = at - seconds(self.settings.lag)
        state = None
        for _ in range(CAS_ATTEMPTS):
            state = self.system.event.find_one(
                {"_id": STATE_ID}, max_time_ms=self.settings.max_time)
            if state is None:
                state = new_state(until)
                try:
                    self.system.event.insert_one(state)
                    return state
                except pymongo.errors.DuplicateKeyError:
                    continue  # another app server's first scrape
            upto = to_datetime(state["upto"])
            if until <= upto:
                return state
            events, upto = self.due_events(upto, until)
            totals = self.count(state, events)
            totals["upto"] = upto
            totals["seq"] = state["seq"] + 1
            if self.system.event.update_one(
                    {"_id": STATE_ID, "seq": state["seq"]},
                    {"$set": totals}).matched_count == 1:
                totals["_id"] = STATE_ID
                return totals
        return state

    def due_events(self, upto, until):
        """Return ``(events, new upto)``: the counted events created after
        ``upto`` and until ``until``, oldest first, at most ``batch``; if
        there are more, the new ``upto`` ends before the last millisecond
        read, so the next scrape reads that millisecond whole."""
        found = [event for event in self.system.event.find(
            {"created": {"$gt": upto, "$lte": until},
             "name": {"$in": list(COUNTED)}},
            {"created": 1, "name": 1, "data": 1}).sort(
                "created", pymongo.ASCENDING).limit(
                    self.settings.batch).max_time_ms(self.settings.max_time)
            if upto < to_datetime(event.get("created")) <= until]
        if len(found) < self.settings.batch:
            return found, until
        last = to_datetime(found[-1]["created"])
        before = [e for e in found if to_datetime(e["created"]) < last]
        if not before:  # a whole batch in one millisecond
            return found, last
        return before, last - datetime.timedelta(milliseconds=1)

    def count(self, state, events):
        """Return the totals of ``state`` plus ``events``: ``{"jobs",
        "histograms"}``."""
        jobs = {row["name"]: dict(row) for row in state.get("jobs") or []}
        histograms = new_state(None)["histograms"]
        for key, value in (state.get("histograms") or {}).items():
            if key in histograms and len(value.get("counts") or []) == len(
                    histograms[key]["counts"]):  # else: buckets changed
                histograms[key] = {"counts": list(value["counts"]),
                                   "sum": float(value.get("sum") or 0.0)}
        started = []
        for event in events:
            data = event.get("data") or {}
            name = data.get("name")
            if not isinstance(name, str) or not name:
                continue
            row = jobs.setdefault(name, dict(
                {key: 0 for key, _, _ in COUNTERS}, name=name))
            key = COUNTED[event["name"]]
            row[key] = row.get(key, 0) + 1
            if event["name"] == "start_job" and data.get("_id") is not None:
                started.append((data["_id"], to_datetime(event["created"])))
        for key, value in self.latencies(started):
            histograms[key]["counts"][bucket_index(BUCKETS[key], value)] += 1
            histograms[key]["sum"] += value
        return {"jobs": [jobs[name] for name in sorted(jobs)],
                "histograms": histograms}

    def latencies(self, started):
        """Yield ``("claim"|"dispatch", seconds)`` of the trials launched at
        ``started`` (``[(job _id, launched at)]``), from the jobs'
        documents in the queue or the journal. A trial whose job was
        claimed again since is left out; so is its claim latency if its due
        time is no longer known (the job was rescheduled meanwhile)."""
        if not started:
            return
        # (not "enqueued.at": NX-27017 answers a dotted projection with a
        # dotted key)
        fields = {"started_at": 1, "query_at": 1, "enqueued": 1,
                  "trial": 1, "dependency": 1}
        ids = list({_id for _id, _ in started})
        docs = {}
        for coll in (self.system.queue, self.system.journal):
            missing = [_id for _id in ids if _id not in docs]
            if not missing:
                break
            for doc in coll.find({"_id": {"$in": missing}}, fields).limit(
                    len(missing)).max_time_ms(self.settings.max_time):
                docs[doc["_id"]] = doc
        for _id, launched in started:
            doc = docs.get(_id)
            claimed = to_datetime((doc or {}).get("started_at"))
            if claimed is None or claimed > launched:
                continue  # gone, or claimed again since
            yield "dispatch", max((launched - claimed).total_seconds(), 0.0)
            due = to_datetime(doc.get("query_at"))
            if due is None or due > claimed:
                # rescheduled since; a first trial was due when enqueued
                enqueued = to_datetime((doc.get("enqueued") or {}).get("at"))
                if doc.get("trial") != 1 or doc.get("dependency") \
                        or enqueued is None or enqueued > claimed:
                    continue
                due = enqueued
            yield "claim", max((claimed - due).total_seconds(), 0.0)


# the collector --------------------------------------------------------------

class QueueCollector:
    """A :mod:`prometheus_client` collector reading the database at every
    collection (blocking: collect in a thread)."""

    def __init__(self, context, settings):
        self.context = context
        self.settings = settings

    def collect(self):
        """Yield the metric families (see the module's documentation)."""
        errors = GaugeMetricFamily(
            "core4_metrics_scrape_error", "1 if this part of the metrics "
            "is left out: its query failed or took too long.",
            labels=["part"])
        for part, collect in (("queue", self.queue_jobs),
                              ("daemons", self.daemons),
                              ("events", self.events)):
            try:
                families = list(collect())
            except pymongo.errors.ConnectionFailure:
                raise  # the database is unreachable: 503, the target is down
            except pymongo.errors.PyMongoError as exc:
                log.warning("GET %s: %s left out: %s", PATH, part,
                            str(exc).split("\n")[0][:200])
                errors.add_metric([part], 1)
                continue
            errors.add_metric([part], 0)
            yield from families
        yield errors

    def queue_jobs(self):
        """Yield ``core4_queue_jobs{state}``."""
        counts = dict.fromkeys(states.ALL, 0)
        for doc in self.context.system.queue.aggregate(
                [{"$group": {"_id": "$state", "n": {"$sum": 1}}}],
                maxTimeMS=self.settings.max_time):
            if isinstance(doc["_id"], str):
                counts[doc["_id"]] = counts.get(doc["_id"], 0) + doc["n"]
        family = GaugeMetricFamily("core4_queue_jobs",
                                   "Jobs in the queue (sys_queue) per state.",
                                   labels=["state"])
        for state in sorted(counts):
            family.add_metric([state], counts[state])
        yield family

    def daemons(self):
        """Yield ``core4_daemons_alive{kind}`` and
        ``core4_worker_claims_total{worker,outcome}``."""
        config = self.context.config
        cutoff = now() - seconds(config.daemon.alive_timeout)
        counts = dict.fromkeys(DAEMON_KINDS, 0)
        claims = CounterMetricFamily(
            "core4_worker_claims", "Claims each alive worker won and lost "
            "since it started.", labels=["worker", "outcome"])
        for doc in self.context.system.worker.find(
                {"kind": {"$exists": True}, "heartbeat": {"$gte": cutoff}},
                {"kind": 1, "phase": 1, "heartbeat": 1, "claims": 1}).limit(
                    MAX_DAEMONS).max_time_ms(self.settings.max_time):
            heartbeat = to_datetime(doc.get("heartbeat"))
            if doc["_id"] in CONTROL_IDS or doc.get("phase") == "exit" \
                    or heartbeat is None or heartbeat < cutoff \
                    or not isinstance(doc.get("kind"), str):
                continue
            counts[doc["kind"]] = counts.get(doc["kind"], 0) + 1
            if isinstance(doc.get("claims"), dict):
                for outcome in ("won", "lost"):
                    value = doc["claims"].get(outcome)
                    if isinstance(value, int) and value >= 0:
                        claims.add_metric([str(doc["_id"]), outcome], value)
        family = GaugeMetricFamily(
            "core4_daemons_alive", "Daemons (sys_worker) with a recent "
            "heartbeat, per kind.", labels=["kind"])
        for kind in sorted(counts):
            family.add_metric([kind], counts[kind])
        yield family
        yield claims

    def events(self):
        """Yield the counters and histograms of the running totals."""
        state = EventCounter(self.context.system, self.settings).advance()
        rows = state.get("jobs") or []
        for key, metric, text in COUNTERS:
            family = CounterMetricFamily(metric, text, labels=["name"])
            for row in rows:
                family.add_metric([row["name"]], row.get(key, 0))
            yield family
        stored = state.get("histograms") or {}
        for key, metric, buckets, text in HISTOGRAMS:
            value = stored.get(key) or {}
            counts = list(value.get("counts") or [])
            if len(counts) != len(buckets) + 1:
                counts = [0] * (len(buckets) + 1)  # buckets were changed
            cumulative, total = [], 0
            for bound, n in zip(list(buckets) + [float("inf")], counts):
                total += n
                cumulative.append((_bound(bound), total))
            yield HistogramMetricFamily(metric, text, buckets=cumulative,
                                        sum_value=value.get("sum", 0.0))
        yield GaugeMetricFamily(
            "core4_metrics_counted_until_timestamp_seconds",
            "Job events created until this time (Unix seconds) are counted.",
            value=to_datetime(state["upto"]).timestamp())


def _bound(value):
    """The ``le`` label of a bucket bound."""
    return "+Inf" if value == float("inf") else repr(float(value))


# the handler ----------------------------------------------------------------

class MetricsHandler(CoreRequestHandler):
    """``GET /metrics``: the Prometheus metrics (see :mod:`core4.api.metrics`);
    public, or for users with ``api://core4.api.metrics.MetricsHandler/r``,
    as ``api.metrics.public`` says."""

    openapi = False

    def initialize(self, context=None, registry=None, public=False):
        """Take the app server's context, the registry and the access."""
        super().initialize(context, registry=registry)
        self.public = public

    async def get(self):
        """Answer the metrics in the format the scraper accepts."""
        encoder, content_type = choose_encoder(
            self.request.headers.get("Accept", ""))
        body = await self.run(encoder, self.registry)
        self.set_header("Content-Type", content_type)
        self.finish(body)


def metrics_rules(context, rules):
    """Return the route of ``GET /metrics`` as ``[(priority, rule)]`` for
    :func:`core4.api.application.build_application` (none unless
    ``api.metrics.enabled``); refuse it if one of ``rules`` (of the
    containers and proxies) serves ``/metrics`` already."""
    settings = MetricsSettings(context.config)
    if not settings.enabled:
        return []
    for _, rule in rules:
        if rule.regex.match(PATH):
            raise Core4UserError("api.metrics: route %s is also served by "
                                 "%s" % (PATH, rule.handler_class.__name__))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(context, settings))
    return [(0, tornado.web.url(PATH, MetricsHandler, {
        "context": context, "registry": registry,
        "public": settings.public}))]

