// The live queue: counts per state, the queue size over time and the job
// table with filters and paging. Updates are pushed by the server as
// server-sent events (GET /_dashboard/stream/queue, one event a second;
// "unavailable" events while the database is away). After an outage the
// view reconnects by itself.

import {api, query, QUEUE_STREAM, UNAVAILABLE, setAvailable} from
  "../api.js";
import {h, replace, setText, fmtTime, fmtDuration, fmtAttempts, flagList,
  progressBar, stateBadge, uid, dotted} from "../util.js";
import {QueueChart} from "./chart.js";

export const STATES = ["pending", "running", "deferred", "failed", "complete",
  "inactive", "error", "killed"];
// newest/oldest by enqueued.at: GET /job orders sort=-_id ascending
const SORTS = [["-enqueued.at", "Newest first"], ["enqueued.at",
  "Oldest first"],
  ["-priority", "Highest priority"], ["name", "Name"], ["state", "State"],
  ["-runtime", "Longest runtime"], ["-prog.value", "Most progress"]];
const PER_PAGE = ["10", "25", "50", "100"];
const FILTERS = ["source", "state", "name", "user", "since", "until", "sort",
  "per_page", "page"];
const COLUMNS = ["State", "Name", "Progress", "Priority", "Attempts", "User",
  "Enqueued", "Age", "Runtime", "Worker", "Flags"];

/** "2026-01-02T03:04" (local, from a datetime-local input) as ISO UTC. */
function isoOf(local) {
  if (!local) return "";
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

function select(id, options, value) {
  return h("select", {id, name: id.replace(/^f-/, "")},
    options.map(([key, label]) => h("option", {value: key,
      selected: key === value}, label)));
}

/** Render the queue view; returns its cleanup. */
export async function render(ctx) {
  const filters = {source: "queue", state: "", name: "", user: "", since: "",
    until: "", sort: "-enqueued.at", per_page: "25", page: "0"};
  for (const key of FILTERS) {
    if (ctx.params.get(key) !== null) filters[key] = ctx.params.get(key);
  }
  let stream = null;
  let closed = false;
  let lastSummary = "";

  // counts per state: buttons filtering the table by the state
  const countButtons = {};
  const counts = h("ul", {class: "counts", "aria-label": "Jobs per state"},
    STATES.map((state) => {
      const n = h("span", {class: "count-n"}, "0");
      const button = h("button", {type: "button",
        class: `count count-${state}`,
        "aria-pressed": String(filters.state === state), onclick: () => {
          setFilters({state: filters.state === state ? "" : state,
            source: "queue", page: "0"});
        }}, h("span", {class: "count-label"}, state), n);
      countButtons[state] = {button, n};
      return h("li", {}, button);
    }));
  const summary = h("p", {class: "summary", "aria-live": "polite",
    id: "queue-summary"});
  const chart = new QueueChart();

  // filters
  const f = {
    source: select("f-source", [["queue", "Jobs in the queue"],
      ["journal", "Finished jobs (journal)"]], filters.source),
    state: select("f-state", [["", "Any state"]].concat(
      STATES.map((s) => [s, s])), filters.state),
    name: h("input", {id: "f-name", name: "name", value: filters.name,
      placeholder: "e.g. core4.queue", spellcheck: "false"}),
    user: h("input", {id: "f-user", name: "user", value: filters.user,
      spellcheck: "false", autocapitalize: "none"}),
    since: h("input", {id: "f-since", name: "since", type: "datetime-local",
      value: filters.since}),
    until: h("input", {id: "f-until", name: "until", type: "datetime-local",
      value: filters.until}),
    sort: select("f-sort", SORTS, filters.sort),
    per_page: select("f-per_page", PER_PAGE.map((n) => [n, n]),
      filters.per_page),
  };
  const field = (key, label) => h("div", {class: "field"},
    h("label", {for: `f-${key}`}, label), f[key]);
  const filterError = h("p", {class: "error", role: "alert"});
  const form = h("form", {class: "filters card", "aria-label": "Filter jobs"},
    field("source", "Show"), field("state", "State"),
    field("name", "Name starts with"), field("user", "Enqueued by"),
    field("since", "Enqueued since"), field("until", "Enqueued until"),
    field("sort", "Sort"), field("per_page", "Per page"),
    h("div", {class: "actions"},
      h("button", {type: "submit"}, "Apply filters"),
      h("button", {type: "button", class: "secondary", onclick: () => {
        setFilters({source: "queue", state: "", name: "", user: "",
          since: "", until: "", sort: "-enqueued.at", page: "0"}, true);
      }}, "Reset")), filterError);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setFilters(readForm());
  });
  for (const key of ["source", "state", "sort", "per_page"]) {
    f[key].addEventListener("change", () => setFilters(readForm()));
  }

  // table and pager
  const tbody = h("tbody");
  const rows = new Map();
  const captionId = uid("jobs");
  const table = h("table", {class: "jobs", "aria-labelledby": captionId},
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", {scope: "col"},
      c)))), tbody);
  const empty = h("p", {class: "empty", hidden: true},
    "No jobs match the filters.");
  const prev = h("button", {type: "button", class: "secondary",
    onclick: () => setFilters({page: String(Number(filters.page) - 1)})},
  "Previous page");
  const next = h("button", {type: "button", class: "secondary",
    onclick: () => setFilters({page: String(Number(filters.page) + 1)})},
  "Next page");
  const pageInfo = h("span", {class: "page-info", id: "page-info"});
  const live = h("span", {class: "live-state", id: "live-state"},
    "connecting…");

  ctx.main.append(
    h("div", {class: "title-row"}, h("h1", {}, "Queue"), live),
    h("section", {class: "overview", "aria-label": "Queue overview"},
      h("div", {class: "card counts-card"}, h("h2", {}, "Jobs per state"),
        counts, summary), chart.element),
    h("section", {"aria-labelledby": captionId},
      h("h2", {id: captionId}, "Jobs"), form,
      h("div", {class: "table-wrap", tabindex: "0", role: "region",
        "aria-label": "Job table (scrolls sideways)"}, table), empty,
      h("nav", {class: "pager", "aria-label": "Pages"}, prev, pageInfo,
        next)));

  function readForm() {
    return {source: f.source.value, state: f.state.value,
      name: f.name.value.trim(), user: f.user.value.trim(),
      since: f.since.value, until: f.until.value, sort: f.sort.value,
      per_page: f.per_page.value, page: "0"};
  }

  function setFilters(changes, resetForm = false) {
    Object.assign(filters, changes);
    if (resetForm) {
      for (const key of Object.keys(f)) {
        f[key].value = filters[key] ?? "";
      }
    }
    f.state.value = filters.state;
    f.source.value = filters.source;
    const params = Object.fromEntries(Object.entries(filters).filter(
      ([key, value]) => value && !(key === "page" && value === "0")));
    history.replaceState(null, "", `#/queue${query(params)}`);
    connect();
  }

  function apiParams() {
    return {source: filters.source, state: filters.state, name: filters.name,
      user: filters.user, since: isoOf(filters.since),
      until: isoOf(filters.until), sort: filters.sort,
      per_page: filters.per_page, page: filters.page};
  }

  function showCounts(data) {
    for (const state of STATES) {
      const {button, n} = countButtons[state];
      setText(n, data.state[state] || 0);
      button.setAttribute("aria-pressed", String(filters.state === state));
      button.setAttribute("aria-label", `${data.state[state] || 0} ${state}`);
    }
    const busy = STATES.filter((s) => data.state[s]).map(
      (s) => `${data.state[s]} ${s}`).join(", ");
    const text = `${data.total} job${data.total === 1 ? "" : "s"} in the ` +
      `queue${busy ? `: ${busy}` : ""}.`;
    if (text !== lastSummary) {
      lastSummary = text;
      summary.textContent = text;
    }
  }

  function cellsOf(doc) {
    const masked = doc.masked;
    const locked = doc.locked || {};
    return [
      doc.state, masked ? null : doc.name,
      masked ? null : (doc.prog || {}).value || 0,
      masked ? "" : doc.priority ?? "", masked ? "" : fmtAttempts(doc),
      masked ? "" : (doc.enqueued || {}).username || "",
      masked ? "" : fmtTime((doc.enqueued || {}).at),
      masked ? "" : fmtDuration(doc.age),
      masked ? "" : fmtDuration(doc.runtime),
      masked ? "" : locked.worker || "",
      masked ? "" : flagList(doc.flags).join(", "),
    ];
  }

  function makeRow(doc) {
    const cells = COLUMNS.map(() => h("td"));
    const tr = h("tr", {dataset: {id: doc._id}}, cells);
    const bar = progressBar(`Progress of ${doc.name}`);
    tr.bar = bar;
    if (doc.masked) {
      replace(cells[1], h("span", {class: "masked",
        title: "You may not see this job"}, "UnauthorizedJob"));
    } else {
      replace(cells[1], h("a", {href: `#/job/${doc._id}`, class: "job-link"},
        dotted(doc.name)));
      cells[2].append(bar);
    }
    tr.cells_ = cells;
    return tr;
  }

  function updateRow(tr, doc) {
    const values = cellsOf(doc);
    const cells = tr.cells_;
    if (cells[0].dataset.state !== doc.state) {
      cells[0].dataset.state = doc.state;
      replace(cells[0], stateBadge(doc.state));
    }
    if (!doc.masked) tr.bar.update(values[2]);
    for (let i = 3; i < values.length; i += 1) setText(cells[i], values[i]);
    tr.classList.toggle("flagged", Boolean(values[10]));
  }

  function showJobs(data) {
    const seen = new Set();
    const ordered = [];
    for (const doc of data.jobs) {
      let tr = rows.get(doc._id);
      if (!tr || tr.masked !== Boolean(doc.masked)) {
        tr = makeRow(doc);
        tr.masked = Boolean(doc.masked);
        rows.set(doc._id, tr);
      }
      updateRow(tr, doc);
      seen.add(doc._id);
      ordered.push(tr);
    }
    for (const [id, tr] of rows) {
      if (!seen.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    const current = Array.from(tbody.children);
    if (current.length !== ordered.length ||
        current.some((tr, i) => tr !== ordered[i])) {
      ordered.forEach((tr) => tbody.append(tr));
    }
    empty.hidden = data.jobs.length > 0;
    const page = Number(data.page);
    const pages = Math.max(1, data.page_count);
    const first = data.count ? page * data.per_page + 1 : 0;
    setText(pageInfo, data.count ? `Page ${page + 1} of ${pages} · jobs ` +
      `${first}–${page * data.per_page + data.count} of ${data.total_count}`
      : `Page ${page + 1} of ${pages}`);
    prev.disabled = page <= 0;
    next.disabled = page + 1 >= pages;
    if (page > 0 && page >= data.page_count && data.total_count > 0) {
      setFilters({page: String(Math.max(0, data.page_count - 1))});
    }
  }

  function connect() {
    if (stream) stream.close();
    stream = null;
    if (closed) return;
    setText(filterError, "");
    const params = apiParams();
    // check the filters once with GET /job (a clear 400 message), then
    // follow the queue live
    api.get("/job", params).then((answer) => {
      if (closed) return;
      showJobs(Object.assign({jobs: answer.data}, answer));
      open(params);
    }, (error) => {
      if (closed || error.status === 401) return;
      live.classList.remove("on");
      if (UNAVAILABLE.includes(error.status)) {
        // the banner says why; the view reconnects when it is back
        setText(live, "database unavailable");
        return;
      }
      setText(filterError, error.message);
      setText(live, "not live");
    });
  }

  function open(params) {
    if (stream) stream.close();
    const source = new EventSource(QUEUE_STREAM + query(params));
    stream = source;
    source.addEventListener("queue", (event) => {
      if (stream !== source) return;
      const data = JSON.parse(event.data);
      setAvailable(true);
      setText(live, "live");
      live.classList.add("on");
      showCounts(data);
      chart.add(Date.parse(data.at) / 1000, data.total);
      showJobs(data);
    });
    source.addEventListener("unavailable", (event) => {
      if (stream !== source || closed) return;
      const data = JSON.parse(event.data);
      live.classList.remove("on");
      setText(live, "database unavailable");
      setAvailable(false, data.code, data.message);
    });
    source.addEventListener("error", () => {
      if (stream !== source || closed) return;
      live.classList.remove("on");
      if (source.readyState === EventSource.CLOSED) {
        setText(live, "not live");
        // refused (e.g. logged out): find out why with a plain request
        api.get("/profile").then(() => window.setTimeout(() => {
          if (stream === source && !closed) connect();
        }, 2000), () => {});
      } else {
        setText(live, "reconnecting…");
      }
    });
  }

  // after an outage: follow the queue again unless the stream goes on
  function onDatabase(event) {
    if (closed || !event.detail.available) return;
    if (!stream || stream.readyState === EventSource.CLOSED) connect();
  }
  window.addEventListener("core4:database", onDatabase);

  api.get("/queue/history").then((answer) => {
    if (!closed) chart.history(answer.data || []);
  }, () => {});
  chart.draw();
  const unwatch = chart.watch();
  connect();
  return () => {
    closed = true;
    window.removeEventListener("core4:database", onDatabase);
    unwatch();
    if (stream) stream.close();
  };
}
