// The audit trail, for administrators: who enqueued, killed, restarted or
// removed a job, changed a user or role, or the maintenance mode
// (GET /audit), newest first, filtered by user, action and time, a page
// at a time. Route: #/audit?user=..&action=..&since=..&page=..

import {api, query} from "../api.js";
import {h, replace, setText, fmtTime} from "../util.js";

const ACTIONS = ["enqueue", "kill", "restart", "remove", "remove_hard",
  "create_role", "update_role", "delete_role", "pause", "resume", "halt"];
const FILTERS = ["user", "action", "since", "per_page", "page"];
const PER_PAGE = ["25", "50", "100"];

/** "2026-01-02T03:04" (local, from a datetime-local input) as ISO UTC. */
function isoOf(local) {
  if (!local) return "";
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

/** The target of an audit record as short text (job, role, project). */
export function targetText(action, target) {
  if (target.job_id) {
    const parts = [`${target.job_name || "job"} ${target.job_id}`];
    if (target.new_id && target.new_id !== target.job_id) {
      parts.push(`→ ${target.new_id}`);
    }
    if (target.running) parts.push("(running)");
    return parts.join(" ");
  }
  if (target.role) {
    const fields = target.fields ? ` (${target.fields.join(", ")})` : "";
    return `${target.kind || "role"} ${target.role}${fields}`;
  }
  if (action === "pause" || action === "resume") {
    return target.project ? `project ${target.project}` : "all jobs";
  }
  if (action === "halt") return "all daemons";
  return "";
}

function jobLink(target) {
  return target.job_id ? h("a", {href: `#/job/${target.job_id}`},
    targetText("", target)) : null;
}

/** Render the audit view. */
export async function render(ctx) {
  const filters = {user: "", action: "", since: "", per_page: "25",
    page: "0"};
  for (const key of FILTERS) {
    if (ctx.params.get(key) !== null) filters[key] = ctx.params.get(key);
  }
  const f = {
    user: h("input", {id: "a-user", name: "user", value: filters.user,
      spellcheck: "false", autocapitalize: "none"}),
    action: h("select", {id: "a-action", name: "action"},
      [["", "Any action"]].concat(ACTIONS.map((a) => [a, a])).map(
        ([key, label]) => h("option", {value: key,
          selected: key === filters.action}, label))),
    since: h("input", {id: "a-since", name: "since", type: "datetime-local",
      value: filters.since}),
    per_page: h("select", {id: "a-per_page", name: "per_page"},
      PER_PAGE.map((n) => h("option", {value: n,
        selected: n === filters.per_page}, n))),
  };
  const field = (key, label) => h("div", {class: "field"},
    h("label", {for: `a-${key}`}, label), f[key]);
  const message = h("p", {class: "error", role: "alert"});
  const form = h("form", {class: "filters card",
    "aria-label": "Filter the audit trail"},
  field("user", "User"), field("action", "Action"),
  field("since", "Since"), field("per_page", "Per page"),
  h("div", {class: "actions"}, h("button", {type: "submit"},
    "Apply filters")), message);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go({user: f.user.value.trim(), action: f.action.value,
      since: f.since.value, per_page: f.per_page.value, page: "0"});
  });
  const tbody = h("tbody");
  const empty = h("p", {class: "empty", hidden: true},
    "No audit records match the filters.");
  const prev = h("button", {type: "button", class: "secondary",
    onclick: () => go({page: String(Number(filters.page) - 1)})},
  "Previous page");
  const next = h("button", {type: "button", class: "secondary",
    onclick: () => go({page: String(Number(filters.page) + 1)})},
  "Next page");
  const pageInfo = h("span", {class: "page-info", id: "audit-page-info"});
  ctx.main.append(h("h1", {}, "Audit"),
    h("section", {"aria-labelledby": "audit-h"},
      h("h2", {id: "audit-h"}, "Who changed what"), form,
      h("div", {class: "table-wrap", tabindex: "0", role: "region",
        "aria-label": "Audit records (scrolls sideways)"},
      h("table", {class: "audit", "aria-labelledby": "audit-h"},
        h("thead", {}, h("tr", {}, ["Time", "User", "Action", "Target",
          "Host"].map((c) => h("th", {scope: "col"}, c)))), tbody)),
      empty, h("nav", {class: "pager", "aria-label": "Pages"}, prev,
        pageInfo, next)));

  function go(changes) {
    Object.assign(filters, changes);
    const params = Object.fromEntries(Object.entries(filters).filter(
      ([key, value]) => value && !(key === "page" && value === "0")));
    history.replaceState(null, "", `#/audit${query(params)}`);
    load();
  }

  async function load() {
    setText(message, "");
    let answer;
    try {
      answer = await api.get("/audit", {user: filters.user,
        action: filters.action, since: isoOf(filters.since),
        per_page: filters.per_page, page: filters.page});
    } catch (error) {
      setText(message, error.message);
      return;
    }
    const docs = answer.data || [];
    replace(tbody, docs.map((doc) => h("tr", {},
      h("td", {}, fmtTime(doc.created)), h("td", {}, doc.user || ""),
      h("td", {}, h("code", {}, doc.action)),
      h("td", {}, jobLink(doc.target) ||
        targetText(doc.action, doc.target)),
      h("td", {}, doc.hostname || ""))));
    empty.hidden = docs.length > 0;
    const page = Number(answer.page);
    const pages = Math.max(1, answer.page_count);
    setText(pageInfo, `Page ${page + 1} of ${pages} · ` +
      `${answer.total_count} records`);
    prev.disabled = page <= 0;
    next.disabled = page + 1 >= pages;
  }
  await load();
  return null;
}
