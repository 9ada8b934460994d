// One job: all fields, live progress, log records and output, the last
// error; kill, restart and remove. Live by GET /job/<id>/follow
// (server-sent events: state, log, close); after a database outage it
// follows the job again by itself.

import {api, API, UNAVAILABLE} from "../api.js";
import {h, replace, setText, fmtTime, fmtClock, fmtDuration, flagList,
  progressBar, stateBadge, pretty, dotted} from "../util.js";

const FINAL = ["complete", "inactive", "error", "killed"];
/** States in which the queue accepts each action (core4.queue.queue). */
const ALLOWED = {
  kill: ["pending", "deferred", "failed", "running"],
  restart: ["deferred", "failed", "killed", "inactive", "error"],
};
/** Fields shown in the summary; all others are listed below it. */
const SHOWN = ["_id", "name", "state", "prog", "priority", "attempts",
  "attempts_left", "trial", "enqueued", "started_at", "finished_at",
  "runtime", "age", "locked", "flags", "last_error", "args", "journaled",
  "masked"];

/** Why `action` is not possible for `doc` (null: it is). */
export function refusal(action, doc, permissions) {
  if (!permissions.canExecute(doc.name)) {
    return "You may not execute this job.";
  }
  if (doc.journaled) return "The job is no longer in the queue.";
  if (action === "remove") {
    return doc.flags && doc.flags.removed ? "Removal is under way." : null;
  }
  if (!ALLOWED[action].includes(doc.state)) {
    return `Not possible while the job is ${doc.state}.`;
  }
  if (action === "kill" && doc.flags && doc.flags.killed) {
    return "A kill was requested already.";
  }
  if (action === "restart" && doc.enqueued && doc.enqueued.child_id) {
    return "The job was restarted already.";
  }
  return null;
}

function row(label, value) {
  return [h("dt", {}, label), h("dd", {}, value)];
}

/** Render the job detail; returns its cleanup. */
export async function render(ctx) {
  const id = ctx.parts[1] || "";
  const permissions = ctx.session.permissions;
  let doc = (await api.get(`/job/${encodeURIComponent(id)}`)).data;
  let stream = null;
  let outputTimer = null;
  let closed = false;
  const logIds = new Set();

  const title = h("h1", {class: "job-title"}, "Job ",
    h("span", {class: "name"}, dotted(doc.name)));
  ctx.setTitle(`Job ${doc.name.split(".").pop()}`);
  const badge = h("span", {class: "badge-slot"});
  const bar = progressBar("Progress");
  const progMessage = h("span", {class: "prog-message"});
  const stateLive = h("p", {class: "visually-hidden", "aria-live": "polite",
    id: "job-live"});
  const liveFlag = h("span", {class: "live-state", id: "job-live-state"});
  const fields = h("dl", {class: "fields"});
  const extra = h("dl", {class: "fields extra"});
  const errorBox = h("section", {class: "card", "aria-labelledby": "err-h",
    hidden: true}, h("h2", {id: "err-h"}, "Last error"),
  h("p", {class: "exception"}), h("pre", {class: "traceback",
    tabindex: "0"}));
  const logBody = h("tbody");
  const logEmpty = h("p", {class: "empty"}, "No log records yet.");
  const output = h("pre", {class: "stdout", tabindex: "0", id: "stdout",
    "aria-label": "Output of the job"});
  const message = h("p", {class: "error", role: "alert"});

  const buttons = {};
  const hints = {};
  const actions = h("div", {class: "job-actions", role: "group",
    "aria-label": "Job actions"},
  ["kill", "restart", "remove"].map((action) => {
    hints[action] = h("span", {class: "hint", id: `hint-${action}`});
    buttons[action] = h("button", {type: "button", id: `job-${action}`,
      class: action === "restart" ? "" : "danger",
      "aria-describedby": `hint-${action}`,
      onclick: () => act(action)},
    {kill: "Kill", restart: "Restart", remove: "Remove"}[action]);
    return h("div", {class: "action"}, buttons[action], hints[action]);
  }));

  const head = h("section", {class: "card job-head", "aria-label": "State",
    tabindex: "-1"}, h("div", {class: "state-line"}, badge,
    h("span", {class: "prog"}, bar, progMessage)), actions, message,
  stateLive);
  ctx.main.append(
    h("p", {class: "crumbs"}, h("a", {href: "#/queue"}, "← Queue")),
    h("div", {class: "title-row"}, title, liveFlag),
    head,
    h("section", {class: "card", "aria-labelledby": "fields-h"},
      h("h2", {id: "fields-h"}, "Fields"), fields,
      h("details", {}, h("summary", {}, "All other fields"), extra)),
    errorBox,
    h("section", {class: "card", "aria-labelledby": "log-h"},
      h("h2", {id: "log-h"}, "Log"),
      h("div", {class: "table-wrap", tabindex: "0", role: "region",
        "aria-label": "Log records (scrolls sideways)"},
      h("table", {class: "log", "aria-labelledby": "log-h"},
        h("thead", {}, h("tr", {}, h("th", {scope: "col"}, "Time"),
          h("th", {scope: "col"}, "Level"), h("th", {scope: "col"},
            "Message"))), logBody)), logEmpty),
    h("section", {class: "card", "aria-labelledby": "out-h"},
      h("h2", {id: "out-h"}, "Output"), output));

  function show() {
    if (badge.dataset.state !== doc.state) {
      badge.dataset.state = doc.state;
      replace(badge, stateBadge(doc.state));
      setText(stateLive, `Job is ${doc.state}.`);
    }
    const prog = doc.prog || {};
    bar.update(prog.value || 0);
    setText(progMessage, prog.message || "");
    const enqueued = doc.enqueued || {};
    const locked = doc.locked || {};
    const flags = flagList(doc.flags);
    replace(fields,
      row("Id", h("code", {}, doc._id)), row("Name", dotted(doc.name)),
      row("State", doc.state + (doc.journaled ? " (journal)" : "")),
      row("Progress", `${Math.round((prog.value || 0) * 100)} %` +
        (prog.message ? ` · ${prog.message}` : "")),
      row("Priority", String(doc.priority ?? "")),
      row("Attempts", `${doc.attempts ?? "?"} (${doc.attempts_left ?? "?"} ` +
        `left, run ${doc.trial ?? 0})`),
      row("Enqueued", `${fmtTime(enqueued.at)} by ` +
        `${enqueued.username || "?"}`),
      row("Started", fmtTime(doc.started_at) || "–"),
      row("Finished", fmtTime(doc.finished_at) || "–"),
      row("Runtime", fmtDuration(doc.runtime) || "–"),
      row("Age", fmtDuration(doc.age) || "–"),
      row("Worker", locked.worker ? locked.worker + (locked.pid
        ? ` (pid ${locked.pid})` : "") : "–"),
      row("Flags", flags.length ? flags.join(", ") : "none"),
      row("Arguments", h("pre", {class: "args"}, pretty(doc.args ?? {}))),
      enqueued.parent_id ? row("Restart of", h("a", {
        href: `#/job/${enqueued.parent_id}`}, enqueued.parent_id)) : null,
      enqueued.child_id ? row("Restarted as", h("a", {
        href: `#/job/${enqueued.child_id}`}, enqueued.child_id)) : null);
    replace(extra, Object.keys(doc).filter((key) => !SHOWN.includes(key))
      .sort().map((key) => row(key, typeof doc[key] === "object" &&
        doc[key] !== null ? h("pre", {}, pretty(doc[key]))
        : String(doc[key]))));
    const error = doc.last_error;
    errorBox.hidden = !error;
    if (error) {
      setText(errorBox.querySelector(".exception"), [error.exception,
        error.message].filter(Boolean).join(": ") || pretty(error));
      const trace = Array.isArray(error.traceback)
        ? error.traceback.join("") : error.traceback || "";
      setText(errorBox.querySelector(".traceback"), trace);
      errorBox.querySelector(".traceback").hidden = !trace;
    }
    for (const action of Object.keys(buttons)) {
      const why = refusal(action, doc, permissions);
      buttons[action].disabled = Boolean(why);
      setText(hints[action], why || "");
    }
  }

  function addLog(record) {
    if (record._id && logIds.has(record._id)) return;
    logIds.add(record._id);
    logEmpty.hidden = true;
    logBody.append(h("tr", {class: `level-${(record.level || "").
      toLowerCase()}`}, h("td", {class: "nowrap"}, h("time", {
      datetime: record.created}, fmtClock(record.created, true))),
    h("td", {}, record.level || ""),
    h("td", {class: "message"}, record.message || "",
      record.exception ? h("pre", {}, pretty(record.exception)) : null)));
  }

  async function loadOutput() {
    try {
      const answer = await api.get(`/job/${id}/stdout`);
      const ended = FINAL.includes(doc.state) || doc.journaled;
      if (!closed) {
        setText(output, answer.data || (ended ? "(no output)"
          : "(the output is stored when the job has ended)"));
      }
    } catch (error) {
      // in an outage the banner says why: keep what is shown
      if (!closed && !UNAVAILABLE.includes(error.status)) {
        setText(output, error.message);
      }
    }
  }

  async function reload() {
    try {
      doc = (await api.get(`/job/${id}`)).data;
      if (!closed) show();
    } catch (error) {
      if (!closed && !UNAVAILABLE.includes(error.status)) {
        setText(message, error.message);
      }
    }
  }

  function follow() {
    if (stream) stream.close();
    const source = new EventSource(`${API}/job/${id}/follow`);
    stream = source;
    setText(liveFlag, "live");
    liveFlag.classList.add("on");
    source.addEventListener("state", (event) => {
      doc = JSON.parse(event.data);
      show();
    });
    source.addEventListener("log", (event) => addLog(JSON.parse(event.data)));
    source.addEventListener("close", () => {
      source.close();
      if (stream === source) stream = null;
      setText(liveFlag, "");
      liveFlag.classList.remove("on");
      window.clearInterval(outputTimer);
      reload();
      loadOutput();
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && stream === source) {
        setText(liveFlag, "not live");
        liveFlag.classList.remove("on");
        reload(); // an outage (503) shows the banner
      }
    });
    // output is stored when the job ends; look again every few seconds
    window.clearInterval(outputTimer);
    outputTimer = window.setInterval(loadOutput, 3000);
  }

  async function act(action) {
    setText(message, "");
    const name = doc.name;
    if (action !== "restart" && !await ctx.confirm(action === "kill"
      ? `Kill job ${name} (${id})?`
      : `Remove job ${name} (${id}) from the queue?`,
    action === "kill" ? "Kill job" : "Remove job")) {
      buttons[action].focus();
      return;
    }
    buttons[action].disabled = true;
    try {
      if (action === "kill") {
        await api.put(`/job/${id}/kill`, {});
        ctx.announce("Kill requested.");
      } else if (action === "remove") {
        await api.del(`/job/${id}`);
        ctx.announce("Job removed.");
      } else {
        const answer = await api.put(`/job/${id}/restart`, {});
        const newId = answer.data.new_id;
        ctx.announce(newId === id ? "Job restarted."
          : "Job restarted as a new job.");
        if (newId !== id) {
          ctx.navigate(`#/job/${newId}`);
          return;
        }
      }
    } catch (error) {
      setText(message, error.message);
    }
    await reload();
    if (!stream && !FINAL.includes(doc.state) && !doc.journaled) follow();
    // a button that became disabled lost the focus: keep it nearby
    if (buttons[action].disabled) head.focus();
  }

  show();
  if (FINAL.includes(doc.state) || doc.journaled) {
    const answer = await api.get(`/job/${id}/log`);
    (answer.data || []).forEach(addLog);
    await loadOutput();
  } else {
    setText(output, "(the output is stored when the job has ended)");
    follow();
  }
  // after an outage: follow the job again if it may still change
  async function onDatabase(event) {
    if (closed || !event.detail.available) return;
    if (stream && stream.readyState !== EventSource.CLOSED) return;
    await reload();
    if (!closed && !FINAL.includes(doc.state) && !doc.journaled) follow();
    else loadOutput();
  }
  window.addEventListener("core4:database", onDatabase);
  return () => {
    closed = true;
    window.removeEventListener("core4:database", onDatabase);
    if (stream) stream.close();
    window.clearInterval(outputTimer);
  };
}
