// The dashboard's shell: session, navigation (by URL fragment, e.g.
// #/job/<id>), the live status region, the confirmation dialog and the
// outage banner (shown while the database or the server cannot be reached;
// the app probes until it is back, then recovers by itself).

import {api, ApiError, HEALTH, Permissions, SESSION, UNAVAILABLE,
  isAvailable, setAvailable} from "./api.js";
import {h, replace, setText} from "./util.js";
import * as login from "./views/login.js";
import * as queue from "./views/queue.js";
import * as job from "./views/job.js";
import * as start from "./views/start.js";
import * as services from "./views/services.js";
import * as daemons from "./views/daemons.js";
import * as roles from "./views/roles.js";
import * as audit from "./views/audit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const status = document.getElementById("status");
const dialog = document.getElementById("confirm");
const outage = document.getElementById("outage");
/** Milliseconds between the probes of an outage: the first, the longest. */
const PROBE_FIRST = 2000;
const PROBE_MAX = 5000;

/** Views by the first part of the route; `admin` views need "cop". */
const VIEWS = {
  login: {view: login, title: "Log in", public: true},
  queue: {view: queue, title: "Queue", nav: "Queue"},
  job: {view: job, title: "Job"},
  start: {view: start, title: "Start a job", nav: "Start a job"},
  services: {view: services, title: "Services", nav: "Services"},
  daemons: {view: daemons, title: "Daemons", nav: "Daemons"},
  roles: {view: roles, title: "Users and roles", nav: "Users and roles",
    admin: true},
  audit: {view: audit, title: "Audit", nav: "Audit", admin: true},
};

const app = {
  session: null, // {user, permissions} when logged in
  cleanup: null,
  loginMessage: "",
  afterLogin: "#/queue",
  firstRender: true,
  sessionFailed: false, // the session could not be asked for (an outage)
  renderFailed: false, // the view could not be shown (an outage)
  probe: null, // the timer of the next probe while in an outage
  probeDelay: PROBE_FIRST,
};

/** True if `error` is an outage (no answer, or 503), not a refusal. */
function isOutage(error) {
  return error instanceof ApiError && UNAVAILABLE.includes(error.status);
}

/** Parse the fragment: "#/job/abc?x=1" -> {parts: ["job","abc"], params}. */
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return {parts: parts.length ? parts : ["queue"],
    params: new URLSearchParams(search), hash: location.hash || "#/queue"};
}

/** Go to `hash` (e.g. "#/job/<id>"). */
export function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

/** Say `message` to assistive technology (and show it briefly). */
let announced = null;
export function announce(message) {
  status.textContent = "";
  window.clearTimeout(announced);
  // set after a moment, so the same message is announced again
  announced = window.setTimeout(() => {
    status.textContent = message;
    announced = window.setTimeout(() => { status.textContent = ""; }, 6000);
  }, 30);
}

/**
 * Ask to confirm `question`; resolves true if confirmed. A native modal
 * dialog: focus moves into it, Escape cancels.
 */
export function confirmAction(question, action = "Confirm") {
  return new Promise((resolve) => {
    const ok = h("button", {type: "submit", value: "ok", class: "danger"},
      action);
    const cancel = h("button", {type: "submit", value: "cancel",
      class: "secondary"}, "Cancel");
    replace(dialog, h("form", {method: "dialog"},
      h("h2", {id: "confirm-title"}, "Please confirm"),
      h("p", {id: "confirm-text"}, question),
      h("div", {class: "actions"}, cancel, ok)));
    dialog.setAttribute("aria-labelledby", "confirm-title");
    dialog.setAttribute("aria-describedby", "confirm-text");
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
    }, {once: true});
    dialog.returnValue = "";
    dialog.showModal();
    cancel.focus();
  });
}

/** Ask the server who is logged in. */
async function loadSession() {
  const answer = await api.get(SESSION);
  const user = answer.data && answer.data.user;
  app.session = user ? {user, permissions: new Permissions(
    user.effective_permissions || [])} : null;
  return app.session;
}

function renderChrome(current) {
  const session = app.session;
  const items = [];
  if (session) {
    for (const [name, spec] of Object.entries(VIEWS)) {
      if (!spec.nav || (spec.admin && !session.permissions.admin)) continue;
      items.push(h("li", {}, h("a", {href: `#/${name}`,
        "aria-current": name === current ? "page" : null}, spec.nav)));
    }
  }
  replace(nav, items);
  if (session) {
    replace(who, h("span", {class: "user"}, session.user.name,
      session.permissions.admin ? h("span", {class: "tag"}, "admin") : null),
    h("button", {type: "button", class: "secondary", onclick: logout},
      "Log out"));
  } else {
    replace(who);
  }
}

async function logout() {
  try {
    await api.post("/logout", {});
  } catch (error) {
    // logged out locally either way
  }
  app.session = null;
  app.loginMessage = "You are logged out.";
  navigate("#/login");
}

/** Render the view of the current fragment. */
async function render() {
  if (app.cleanup) {
    try { app.cleanup(); } catch (error) { /* view already gone */ }
    app.cleanup = null;
  }
  if (dialog.open) dialog.close();
  const {parts, params, hash} = route();
  let name = parts[0];
  let spec = VIEWS[name];
  if (app.sessionFailed) {
    // who is logged in is unknown: no login form (the cookie may be fine)
    renderChrome(null);
    app.firstRender = false;
    return page("Waiting for the database", h("p", {},
      "The dashboard cannot ask who is logged in while the database is " +
      "unavailable. It goes on by itself as soon as the database is back."),
    false);
  }
  if (!app.session && !(spec && spec.public)) {
    app.afterLogin = hash;
    name = "login";
    spec = VIEWS.login;
  } else if (app.session && name === "login") {
    name = "queue";
    spec = VIEWS.queue;
  }
  renderChrome(name);
  const focus = !app.firstRender;
  app.firstRender = false;
  if (!spec) {
    return page("Not found", h("p", {}, "There is no page ",
      h("code", {}, location.hash), ". ", h("a", {href: "#/queue"},
        "Go to the queue")), focus);
  }
  if (spec.admin && !app.session.permissions.admin) {
    return page("Not permitted", h("p", {},
      "This page is for administrators only."), focus);
  }
  document.title = `${spec.title} · core4`;
  const context = {
    main, parts, params, session: app.session, navigate, announce,
    confirm: confirmAction, setTitle: (text) => {
      document.title = `${text} · core4`;
    },
    loginMessage: app.loginMessage,
    loggedIn: async () => {
      await loadSession();
      app.loginMessage = "";
      const target = app.afterLogin && !app.afterLogin.startsWith("#/login")
        ? app.afterLogin : "#/queue";
      app.afterLogin = "#/queue";
      navigate(target);
    },
  };
  replace(main);
  main.setAttribute("aria-busy", "true");
  app.renderFailed = false;
  try {
    app.cleanup = await spec.view.render(context) || null;
  } catch (error) {
    app.renderFailed = isOutage(error);
    if (!(error instanceof ApiError && error.status === 401)) {
      replace(main, h("h1", {tabindex: "-1"}, spec.title),
        h("p", {class: "error", role: "alert"}, error.message));
    }
  } finally {
    main.removeAttribute("aria-busy");
  }
  if (focus) {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({preventScroll: false});
    }
  }
}

function page(title, body, focus) {
  document.title = `${title} · core4`;
  const heading = h("h1", {tabindex: "-1"}, title);
  replace(main, heading, body);
  if (focus) heading.focus();
}

/** Show the outage banner: what is away, and that the app retries. */
function showOutage(code) {
  const what = code === 0 ? "Server unreachable" : "Database unavailable";
  const why = code === 0 ? "The dashboard cannot reach the core4 server."
    : "core4 cannot reach its database right now.";
  replace(outage, h("strong", {}, what), ` – ${why} `,
    "The dashboard retries by itself.");
  outage.dataset.status = String(code);
  outage.hidden = false;
}

/** Ask GET /_dashboard/health until the database answers again. */
async function probe() {
  app.probe = null;
  let code = 0;
  try {
    const response = await fetch(HEALTH, {headers: {Accept:
      "application/json"}, credentials: "same-origin", cache: "no-store"});
    code = response.status;
  } catch (error) {
    code = 0; // the server itself cannot be reached
  }
  if (isAvailable()) return; // a live view saw the end of the outage
  if (code >= 200 && code < 300) {
    setAvailable(true);
    return;
  }
  if (String(code) !== outage.dataset.status) showOutage(code);
  app.probeDelay = Math.min(app.probeDelay * 1.5, PROBE_MAX);
  app.probe = window.setTimeout(probe, app.probeDelay);
}

/** After an outage: ask for the session or show the view again if that
 * failed meanwhile (live views reconnect by themselves). */
async function recover() {
  if (app.sessionFailed) {
    try {
      await loadSession();
    } catch (error) {
      if (isOutage(error)) return; // the next recovery tries again
      app.session = null; // log in again
    }
    app.sessionFailed = false;
    if (status.textContent) setText(status, "");
    await render();
  } else if (app.renderFailed) {
    await render();
  }
}

window.addEventListener("core4:database", (event) => {
  const {available, status: code} = event.detail;
  if (!available) {
    showOutage(code);
    if (app.probe === null) {
      app.probeDelay = PROBE_FIRST;
      app.probe = window.setTimeout(probe, app.probeDelay);
    }
    return;
  }
  window.clearTimeout(app.probe);
  app.probe = null;
  outage.hidden = true;
  replace(outage);
  delete outage.dataset.status;
  announce("The database is available again.");
  recover();
});
window.addEventListener("hashchange", render);
window.addEventListener("core4:logout", (event) => {
  if (!app.session) return;
  app.session = null;
  app.loginMessage = event.detail.message;
  app.afterLogin = location.hash;
  navigate("#/login");
});
document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

async function boot() {
  try {
    await loadSession();
  } catch (error) {
    app.sessionFailed = isOutage(error);
    // an outage shows the banner instead
    if (!app.sessionFailed) setText(status, error.message);
  }
  await render();
}

boot();
