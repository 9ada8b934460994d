// The login page: POST /login sets the http-only login cookie.

import {api} from "../api.js";
import {h} from "../util.js";

/** Render the login form. */
export async function render(ctx) {
  const user = h("input", {id: "login-user", name: "username",
    autocomplete: "username", required: true, autocapitalize: "none",
    spellcheck: "false"});
  const password = h("input", {id: "login-password", name: "password",
    type: "password", autocomplete: "current-password", required: true});
  const message = h("p", {id: "login-message", class: "error",
    role: "alert"}, ctx.loginMessage || "");
  const submit = h("button", {type: "submit"}, "Log in");
  const form = h("form", {class: "card login", "aria-labelledby":
    "login-title", novalidate: true},
  h("h1", {id: "login-title"}, "Log in to core4"),
  h("div", {class: "field"}, h("label", {for: "login-user"}, "Username"),
    user),
  h("div", {class: "field"}, h("label", {for: "login-password"},
    "Password"), password),
  message, h("div", {class: "actions"}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!user.value || !password.value) {
      message.textContent = "Enter your username and password.";
      (user.value ? password : user).focus();
      return;
    }
    submit.disabled = true;
    message.textContent = "";
    try {
      await api.post("/login", {username: user.value,
        password: password.value});
      await ctx.loggedIn();
    } catch (error) {
      message.textContent = error.status === 401
        ? "Wrong username or password." : error.message;
      password.value = "";
      password.focus();
      submit.disabled = false;
    }
  });
  ctx.main.append(form);
  user.focus();
  return null;
}
