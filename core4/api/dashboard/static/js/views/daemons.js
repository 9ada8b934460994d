// The daemons (workers, schedulers, app servers) with their heartbeats,
// and the maintenance mode; administrators may pause and resume claims.
// Refreshed with GET /system every two seconds.

import {api, UNAVAILABLE} from "../api.js";
import {h, replace, setText, fmtTime, fmtDuration} from "../util.js";

const KINDS = [["worker", "Workers"], ["scheduler", "Schedulers"],
  ["app", "App servers"]];
const INTERVAL = 2000;

function details(doc) {
  if (doc.kind === "worker") {
    return doc.max_jobs !== undefined ? `${doc.jobs ?? 0} of ` +
      `${doc.max_jobs} job slots busy` : "";
  }
  if (doc.kind === "app") return doc.url || "";
  if (doc.kind === "scheduler") return doc.leader ? "leader" : "";
  return "";
}

/** Render the daemons view; returns its cleanup. */
export async function render(ctx) {
  const admin = ctx.session.permissions.admin;
  let timer = null;
  let closed = false;
  const summary = h("p", {class: "summary lead", "aria-live": "polite"});
  const tbody = h("tbody");
  const maintenance = h("div", {class: "maintenance"});
  const message = h("p", {class: "error", role: "alert"});
  const heading = h("h2", {id: "maint-h", tabindex: "-1"}, "Maintenance");
  ctx.main.append(h("h1", {}, "Daemons"), summary,
    h("section", {class: "card", "aria-labelledby": "daemons-h"},
      h("h2", {id: "daemons-h"}, "Live daemons"),
      h("div", {class: "table-wrap", tabindex: "0", role: "region",
        "aria-label": "Daemons (scrolls sideways)"},
      h("table", {class: "daemons", "aria-labelledby": "daemons-h"},
        h("thead", {}, h("tr", {}, ["Kind", "Name", "Host", "Pid", "Phase",
          "Heartbeat", "Started", "Details"].map((c) => h("th",
          {scope: "col"}, c)))), tbody))),
    h("section", {class: "card", "aria-labelledby": "maint-h"},
      heading, maintenance, message));

  async function change(paused, project) {
    setText(message, "");
    try {
      const body = project ? {paused, project} : {paused};
      await api.put("/system/maintenance", body);
      ctx.announce(`${project ? `Project ${project}` : "All jobs"}: ` +
        `${paused ? "paused" : "resumed"}.`);
      await refresh();
      // the controls were drawn anew: keep the focus in the section
      const again = maintenance.querySelector(project ? "#maint-project"
        : "#maint-toggle");
      (again || heading).focus();
    } catch (error) {
      setText(message, error.message);
    }
  }

  let lastMode = null;
  function showMaintenance(mode) {
    const key = JSON.stringify(mode);
    if (key === lastMode) return;
    lastMode = key;
    const projects = mode.projects || [];
    const parts = [h("p", {id: "maint-global"}, mode.global
      ? "Claims are paused: workers start no jobs."
      : "Claims are running: workers start jobs.")];
    if (admin) {
      parts.push(h("button", {type: "button", id: "maint-toggle",
        class: mode.global ? "" : "danger", "aria-pressed": String(
          Boolean(mode.global)), onclick: () => change(!mode.global)},
      mode.global ? "Resume all jobs" : "Pause all jobs"));
    }
    parts.push(h("h3", {}, "Paused projects"));
    parts.push(projects.length ? h("ul", {class: "projects"}, projects.map(
      (name) => h("li", {}, h("span", {}, name), admin ? h("button", {
        type: "button", class: "secondary",
        onclick: () => change(false, name)}, `Resume ${name}`) : null)))
      : h("p", {}, "None."));
    if (admin) {
      const input = h("input", {id: "maint-project", name: "project",
        required: true, pattern: "[A-Za-z_][A-Za-z0-9_]*",
        spellcheck: "false", autocapitalize: "none"});
      const form = h("form", {class: "inline"}, h("div", {class: "field"},
        h("label", {for: "maint-project"}, "Pause a project"), input),
      h("button", {type: "submit", class: "secondary"}, "Pause project"));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const name = input.value.trim();
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
          setText(message, "Enter a project name (letters, digits, _).");
          input.focus();
          return;
        }
        change(true, name);
      });
      parts.push(form);
    } else {
      parts.push(h("p", {class: "hint"},
        "Only administrators can change the maintenance mode."));
    }
    replace(maintenance, parts);
  }

  function showDaemons(daemons) {
    const order = KINDS.map(([kind]) => kind);
    daemons.sort((a, b) => (order.indexOf(a.kind) - order.indexOf(b.kind)) ||
      String(a._id).localeCompare(String(b._id)));
    replace(tbody, daemons.map((doc) => h("tr", {dataset: {kind: doc.kind}},
      h("td", {}, doc.kind), h("th", {scope: "row"}, doc._id),
      h("td", {}, doc.hostname || ""), h("td", {}, String(doc.pid ?? "")),
      h("td", {}, doc.phase || ""),
      h("td", {class: doc.heartbeat_age > 5 ? "late" : ""},
        `${fmtDuration(doc.heartbeat_age)} ago`),
      h("td", {}, fmtTime(doc.started_at)), h("td", {}, details(doc)))));
    if (!daemons.length) {
      tbody.append(h("tr", {}, h("td", {colspan: "8"}, "No live daemons.")));
    }
    setText(summary, KINDS.map(([kind, label]) => `${label}: ${
      daemons.filter((doc) => doc.kind === kind).length}`).join(" · "));
  }

  let outage = false;
  async function refresh() {
    window.clearTimeout(timer);
    try {
      const data = (await api.get("/system")).data;
      if (closed) return;
      showDaemons(data.daemons || []);
      showMaintenance(data.maintenance || {global: false, projects: []});
      if (outage) setText(message, "");
      outage = false;
    } catch (error) {
      if (closed) return;
      // an outage shows the banner; the next refresh clears the message
      outage = UNAVAILABLE.includes(error.status);
      if (error.status !== 401) setText(message, error.message);
    }
    if (!closed) timer = window.setTimeout(refresh, INTERVAL);
  }

  await refresh();
  return () => {
    closed = true;
    window.clearTimeout(timer);
  };
}
