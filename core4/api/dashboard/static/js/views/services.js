// Services: the running service jobs (GET /service, asked every three
// seconds) with their owner and health, an Open link (the app server's
// authenticated proxy /service/<id>/, in a new tab) and Stop
// (DELETE /service/<id>, confirmed); and a form that starts a service
// class (POST /job) with its directory argument. Services started here
// are followed until a worker runs them (GET /job/<id>), so a service that
// fails at once says why.

import {api, UNAVAILABLE} from "../api.js";
import {h, replace, setText, fmtTime, fmtClock, fmtDuration, dotted} from
  "../util.js";
import {parseArgs} from "./start.js";

const INTERVAL = 3000;
/** How each health looks: a symbol beside the (always shown) word. */
const HEALTH_SYMBOL = {waiting: "⧗", starting: "◔", healthy: "✓",
  unhealthy: "✕"};
/** The directory argument of the services core4 ships, by class name. */
export const DIRECTORY_ARGUMENTS = {
  HttpService: {name: "directory", label: "Directory to serve"},
  JupyterService: {name: "notebook_dir", label: "Notebook directory"},
};
/** Job states after which a job runs no more. */
const FINAL = ["complete", "error", "inactive", "killed"];
const COLUMNS = ["Service", "Owner", "Health", "Running since", "Actions"];

/** The class name of a dotted job name. */
export function shortName(name) {
  return String(name ?? "").split(".").pop();
}

/** True if the registered job `job` (of GET /job/list) is a service: as
 * the listing says if it does, else by its class name. */
export function isService(job) {
  if (job.service !== undefined) return Boolean(job.service);
  return shortName(job.name).includes("Service");
}

/** The path to open service `entry` at, if it is the app server's proxy
 * path of the service (never another address or scheme). */
export function openPath(entry) {
  const path = `/service/${entry._id}/`;
  return /^[0-9a-f]{24}$/.test(entry._id) && entry.path === path ? path
    : null;
}

/** A health badge: colour and symbol by health, always with its word. */
function healthBadge(health) {
  const name = HEALTH_SYMBOL[health] ? health : "unknown";
  return h("span", {class: `health health-${name}`},
    h("span", {class: "health-symbol", "aria-hidden": "true"},
      HEALTH_SYMBOL[name] || "?"), ` ${health || "unknown"}`);
}

/** Seconds since the ISO time `value` (0 if unknown). */
function secondsSince(value) {
  const time = Date.parse(value);
  return Number.isNaN(time) ? 0 : Math.max(0, (Date.now() - time) / 1000);
}

/** Render the services view; returns its cleanup. */
export async function render(ctx) {
  const me = ctx.session.user.name;
  const perms = ctx.session.permissions;
  const registered = (await api.get("/job/list")).data || [];
  const classes = registered.filter(isService);
  let timer = null;
  let closed = false;
  let loaded = false;
  let outage = false;
  const rows = new Map(); // job id -> the row of a listed service
  const waiting = new Map(); // job id -> name: started here, not running
  const stopping = new Set(); // job ids whose stop was asked

  const listHeading = h("h2", {id: "services-h", tabindex: "-1"},
    "Running services");
  const summary = h("p", {class: "summary lead", id: "services-summary",
    "aria-live": "polite"});
  const tbody = h("tbody");
  const empty = h("p", {class: "empty", hidden: true},
    "No service is running.");
  const listMessage = h("p", {class: "error", role: "alert"});
  ctx.main.append(h("h1", {}, "Services"),
    h("section", {class: "card", "aria-labelledby": "services-h"},
      listHeading, summary,
      h("div", {class: "table-wrap", tabindex: "0", role: "region",
        "aria-label": "Services (scrolls sideways)"},
      h("table", {class: "services", "aria-labelledby": "services-h"},
        h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th",
          {scope: "col"}, c)))), tbody)),
      empty, listMessage),
    startSection());

  function startSection() {
    const heading = h("h2", {id: "service-start-h"}, "Start a service");
    if (!classes.length) {
      return h("section", {class: "card", "aria-labelledby":
        "service-start-h"}, heading, h("p", {},
        "There is no service you may start. Service classes are listed " +
        "once they are registered and you have a ",
        h("code", {}, "job://…/x"), " permission for them."));
    }
    const picker = h("select", {id: "service-class", name: "qual_name",
      required: true, "aria-describedby": "service-doc"},
    classes.map((job) => h("option", {value: job.name}, job.name)));
    const docText = h("p", {id: "service-doc", class: "doc"});
    const dirLabel = h("label", {for: "service-dir"});
    const dir = h("input", {id: "service-dir", name: "directory",
      spellcheck: "false", autocapitalize: "none", autocomplete: "off",
      "aria-describedby": "service-dir-hint"});
    const dirHint = h("p", {id: "service-dir-hint", class: "hint"});
    const dirField = h("div", {class: "field"}, dirLabel, dir, dirHint);
    const args = h("textarea", {id: "service-args", name: "args", rows: "3",
      spellcheck: "false",
      "aria-describedby": "service-args-hint service-args-error"}, "{}");
    const argsError = h("p", {id: "service-args-error", class: "error",
      "aria-live": "polite"});
    const message = h("p", {class: "error", role: "alert"});
    const started = h("p", {class: "started", "aria-live": "polite"});
    const submit = h("button", {type: "submit"}, "Start service");

    function argument() {
      return DIRECTORY_ARGUMENTS[shortName(picker.value)] || null;
    }

    function describe() {
      const job = classes.find((each) => each.name === picker.value);
      setText(docText, job ? job.doc || "No description." : "");
      const arg = argument();
      dirField.hidden = !arg;
      if (arg) {
        setText(dirLabel, arg.label);
        setText(dirHint, `An absolute path on the worker's machine, ` +
          `passed as the argument "${arg.name}". Leave it empty for the ` +
          "worker's current directory.");
      }
    }

    function check() {
      const result = parseArgs(args.value);
      args.setAttribute("aria-invalid", String(Boolean(result.error)));
      setText(argsError, result.error || "");
      return result;
    }

    picker.addEventListener("change", describe);
    args.addEventListener("input", check);
    const form = h("form", {class: "start", novalidate: true,
      "aria-labelledby": "service-start-h"},
    h("div", {class: "field"}, h("label", {for: "service-class"},
      "Service"), picker, docText),
    dirField,
    h("details", {}, h("summary", {}, "More arguments"),
      h("div", {class: "field"}, h("label", {for: "service-args"},
        "Arguments (JSON object)"), args,
      h("p", {id: "service-args-hint", class: "hint"},
        "Further arguments of the service's job, e.g. " +
        "{\"max_runtime\": 3600}."), argsError)),
    message, h("div", {class: "actions"}, submit), started);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      setText(message, "");
      const result = check();
      if (result.error) {
        form.querySelector("details").open = true;
        args.focus();
        return;
      }
      const arg = argument();
      const value = dir.value.trim();
      if (arg && value) result.args[arg.name] = value;
      submit.disabled = true;
      try {
        const answer = await api.post("/job", {qual_name: picker.value,
          args: result.args});
        const {_id: id, name} = answer.data;
        waiting.set(id, name);
        replace(started, `${shortName(name)} enqueued as job `,
          h("a", {href: `#/job/${id}`}, id),
          ": it is listed above as soon as a worker starts it.");
        ctx.announce(`Service ${shortName(name)} enqueued.`);
        await refresh();
      } catch (error) {
        setText(message, error.message);
      } finally {
        submit.disabled = false;
      }
    });
    describe();
    return h("section", {class: "card", "aria-labelledby":
      "service-start-h"}, heading, form);
  }

  /** A new row for service `id` (cells filled by update). */
  function newRow(id) {
    const cells = COLUMNS.map((_, i) => i === 0 ? h("th", {scope: "row"})
      : h("td", {}));
    const row = h("tr", {dataset: {id}}, cells);
    return {row, cells, info: "", actions: ""};
  }

  /** Fill `item` (of newRow) with `entry`; cells are only drawn anew when
   * what they show changed (the focus stays on a link or button). */
  function update(item, entry) {
    const id = entry._id;
    const health = entry.waiting ? "waiting" : entry.health || "starting";
    const [nameCell, ownerCell, healthCell, sinceCell, actionCell] =
      item.cells;
    setText(sinceCell, entry.started_at ? `${fmtTime(entry.started_at)} ` +
      `(${fmtDuration(secondsSince(entry.started_at))})` : "");
    const info = JSON.stringify([entry.name, entry.owner, health,
      entry.health_at, entry.state]);
    if (info !== item.info) {
      item.info = info;
      item.row.dataset.health = health;
      replace(nameCell, h("a", {href: `#/job/${id}`}, dotted(entry.name)));
      setText(ownerCell, entry.owner || "");
      replace(healthCell, healthBadge(health), entry.waiting
        ? h("span", {class: "hint"}, ` (job ${entry.state})`)
        : entry.health_at ? h("span", {class: "hint"},
          ` since ${fmtClock(entry.health_at)}`) : null);
    }
    const path = entry.waiting || health === "starting" ? null
      : openPath(entry);
    const actions = JSON.stringify([Boolean(entry.waiting), path,
      entry.owner, stopping.has(id)]);
    if (actions !== item.actions) {
      item.actions = actions;
      replace(actionCell, h("div", {class: "actions"},
        actionControls(entry, path)));
    }
  }

  /** Open (the owner and admins) and Stop (who may execute the job). */
  function actionControls(entry, path) {
    const id = entry._id;
    const short = shortName(entry.name);
    if (entry.waiting) {
      return [h("span", {class: "hint"}, "waiting for a worker")];
    }
    const controls = [];
    if (path && (entry.owner === me || perms.admin)) {
      controls.push(h("a", {class: "button secondary", href: path,
        target: "_blank", rel: "noopener noreferrer",
        "aria-label": `Open ${short} ${id} (new tab)`}, "Open"));
    } else if (path) {
      controls.push(h("span", {class: "hint"}, "only its owner opens it"));
    }
    if (perms.canExecute(entry.name)) {
      const busy = stopping.has(id);
      controls.push(h("button", {type: "button", class: "danger",
        disabled: busy, "aria-label": `Stop ${short} ${id}`,
        onclick: () => stop(entry)}, busy ? "Stopping…" : "Stop"));
    }
    return controls;
  }

  async function stop(entry) {
    const id = entry._id;
    const short = shortName(entry.name);
    setText(listMessage, "");
    if (!await ctx.confirm(`Stop service ${entry.name} (${id})? Its ` +
      "server ends and whoever uses it loses the connection.",
    "Stop service")) {
      const button = rows.get(id) && rows.get(id).row.querySelector(
        "button");
      (button || listHeading).focus();
      return;
    }
    stopping.add(id);
    try {
      await api.del(`/service/${id}`);
      ctx.announce(`Stopping ${short}.`);
    } catch (error) {
      stopping.delete(id);
      setText(listMessage, error.message);
    }
    await refresh();
    if (!document.activeElement || document.activeElement === document.body) {
      listHeading.focus();
    }
  }

  /** Follow the jobs started here until they run (or end). */
  async function pending(listed) {
    const entries = [];
    for (const [id, name] of waiting) {
      if (listed.has(id)) {
        waiting.delete(id);
        continue;
      }
      let doc;
      try {
        doc = (await api.get(`/job/${id}`)).data;
      } catch (error) {
        if (error.status !== 404) throw error;
        waiting.delete(id);
        continue;
      }
      if (FINAL.includes(doc.state)) {
        waiting.delete(id);
        const why = doc.last_error && doc.last_error.exception;
        setText(listMessage, `${shortName(name)} (job ${id}) ended ` +
          `${doc.state}${why ? `: ${why}` : ""}.`);
        continue;
      }
      entries.push(doc.state === "running"
        ? {_id: id, name, owner: me, state: doc.state,
          started_at: doc.started_at, health: "starting"}
        : {_id: id, name, owner: me, state: doc.state, waiting: true});
    }
    return entries;
  }

  function show(entries) {
    const seen = new Set(entries.map((entry) => entry._id));
    for (const [id, item] of rows) {
      if (seen.has(id)) continue;
      const hadFocus = item.row.contains(document.activeElement);
      item.row.remove();
      rows.delete(id);
      if (stopping.delete(id)) ctx.announce("Service stopped.");
      if (hadFocus) listHeading.focus();
    }
    entries.forEach((entry, index) => {
      let item = rows.get(entry._id);
      const before = item && item.row.dataset.health;
      if (!item) {
        item = newRow(entry._id);
        rows.set(entry._id, item);
      }
      update(item, entry);
      // moved only when out of place: moving a row drops its focus
      if (tbody.children[index] !== item.row) {
        tbody.insertBefore(item.row, tbody.children[index] || null);
      }
      const now = item.row.dataset.health;
      if (loaded && before !== now && (now === "healthy" ||
          now === "unhealthy")) {
        ctx.announce(`Service ${shortName(entry.name)} is ${now}.`);
      }
    });
    empty.hidden = entries.length > 0;
    const running = entries.filter((entry) => !entry.waiting);
    const healthy = running.filter((entry) => entry.health === "healthy");
    setText(summary, `${running.length} running · ${healthy.length} ` +
      `healthy${entries.length > running.length
        ? ` · ${entries.length - running.length} waiting` : ""}`);
  }

  async function load() {
    try {
      const listed = (await api.get("/service")).data || [];
      const ids = new Set(listed.map((entry) => entry._id));
      const extra = await pending(ids);
      if (closed) return;
      show(listed.concat(extra));
      loaded = true;
      if (outage) setText(listMessage, "");
      outage = false;
    } catch (error) {
      if (closed) return;
      // an outage shows the banner; the next refresh clears the message
      outage = UNAVAILABLE.includes(error.status);
      if (error.status !== 401) setText(listMessage, error.message);
    }
  }

  let inFlight = null;
  let again = false;
  /** Ask for the services now (once more after a refresh in flight). */
  function refresh() {
    if (inFlight) {
      again = true;
      return inFlight;
    }
    window.clearTimeout(timer);
    inFlight = load().finally(() => {
      inFlight = null;
      if (closed) return;
      if (again) {
        again = false;
        refresh();
      } else {
        timer = window.setTimeout(refresh, INTERVAL);
      }
    });
    return inFlight;
  }

  await refresh();
  return () => {
    closed = true;
    window.clearTimeout(timer);
  };
}
