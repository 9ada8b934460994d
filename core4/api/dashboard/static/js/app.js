// The dashboard's shell: session, navigation (by URL fragment, e.g.
// #/job/<id>), the live status region and the confirmation dialog.

import {api, ApiError, Permissions, SESSION} from "./api.js";
import {h, replace, setText} from "./util.js";
import * as login from "./views/login.js";
import * as queue from "./views/queue.js";
import * as job from "./views/job.js";
import * as start from "./views/start.js";
import * as daemons from "./views/daemons.js";
import * as roles from "./views/roles.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const status = document.getElementById("status");
const dialog = document.getElementById("confirm");

/** Views by the first part of the route; `admin` views need "cop". */
const VIEWS = {
  login: {view: login, title: "Log in", public: true},
  queue: {view: queue, title: "Queue", nav: "Queue"},
  job: {view: job, title: "Job"},
  start: {view: start, title: "Start a job", nav: "Start a job"},
  daemons: {view: daemons, title: "Daemons", nav: "Daemons"},
  roles: {view: roles, title: "Users and roles", nav: "Users and roles",
    admin: true},
};

const app = {
  session: null, // {user, permissions} when logged in
  cleanup: null,
  loginMessage: "",
  afterLogin: "#/queue",
  firstRender: true,
};

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
  try {
    app.cleanup = await spec.view.render(context) || null;
  } catch (error) {
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
    setText(status, error.message);
  }
  await render();
}

boot();
