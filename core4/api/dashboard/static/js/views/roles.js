// Users and roles, for administrators: list (GET /roles), create
// (POST /roles), edit (PUT /roles/<id> with the etag read) and delete
// (DELETE /roles/<id> with the etag). Routes: #/roles, #/roles/new,
// #/roles/<id>.

import {api} from "../api.js";
import {h, setText, fmtTime} from "../util.js";

const isUser = (doc) => Boolean(doc.email);

/** Render the list or the form, by the route. */
export async function render(ctx) {
  const target = ctx.parts[1];
  if (target) return renderForm(ctx, target === "new" ? null : target);
  const docs = (await api.get("/roles")).data || [];
  const tbody = h("tbody", {}, docs.map((doc) => h("tr", {},
    h("th", {scope: "row"}, h("a", {href: `#/roles/${doc._id}`,
      "aria-label": `Edit ${doc.name}`}, doc.name)),
    h("td", {}, isUser(doc) ? "user" : "role"),
    h("td", {}, doc.realname || ""), h("td", {}, doc.email || ""),
    h("td", {}, doc.is_active ? "yes" : "no"),
    h("td", {}, (doc.roles || []).join(", ")),
    h("td", {class: "perms"}, (doc.permissions || []).join(" ")),
    h("td", {}, fmtTime(doc.last_login)))));
  ctx.main.append(h("div", {class: "title-row"}, h("h1", {},
    "Users and roles"), h("a", {href: "#/roles/new", class: "button",
    id: "new-role"}, "New user or role")),
  h("section", {class: "card", "aria-labelledby": "roles-h"},
    h("h2", {id: "roles-h", class: "visually-hidden"}, "All users and roles"),
    h("div", {class: "table-wrap", tabindex: "0", role: "region",
      "aria-label": "Users and roles (scrolls sideways)"},
    h("table", {class: "roles", "aria-labelledby": "roles-h"},
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Real name", "Email",
        "Active", "Roles", "Permissions", "Last login"].map((c) => h("th",
        {scope: "col"}, c)))), tbody))));
  return null;
}

function field(id, label, input, hint) {
  if (hint) input.setAttribute("aria-describedby", `${id}-hint`);
  return h("div", {class: "field"}, h("label", {for: id}, label), input,
    hint ? h("p", {class: "hint", id: `${id}-hint`}, hint) : null);
}

async function renderForm(ctx, id) {
  const all = (await api.get("/roles")).data || [];
  const doc = id ? (await api.get(`/roles/${encodeURIComponent(id)}`)).data
    : {name: "", realname: "", email: "", is_active: true, roles: [],
      permissions: []};
  const creating = !id;
  const self = id && id === ctx.session.user._id;
  const kindUser = h("input", {type: "radio", name: "kind", id: "kind-user",
    value: "user", checked: creating || isUser(doc), disabled: !creating});
  const kindRole = h("input", {type: "radio", name: "kind", id: "kind-role",
    value: "role", checked: !creating && !isUser(doc), disabled: !creating});
  const name = h("input", {id: "r-name", required: true, value: doc.name,
    autocomplete: "off", spellcheck: "false", autocapitalize: "none"});
  const realname = h("input", {id: "r-realname", value: doc.realname || ""});
  const email = h("input", {id: "r-email", type: "email",
    value: doc.email || "", autocomplete: "off"});
  const password = h("input", {id: "r-password", type: "password",
    autocomplete: "new-password"});
  const active = h("input", {id: "r-active", type: "checkbox",
    checked: doc.is_active !== false});
  const roleNames = all.filter((each) => !isUser(each) &&
    each.name !== doc.name).map((each) => each.name);
  const roleBoxes = roleNames.map((roleName) => h("input", {type: "checkbox",
    id: `r-role-${roleName}`, value: roleName,
    checked: (doc.roles || []).includes(roleName)}));
  const permissions = h("textarea", {id: "r-permissions", rows: "5",
    spellcheck: "false"}, (doc.permissions || []).join("\n"));
  const message = h("p", {class: "error", role: "alert"});
  const userFields = h("div", {class: "user-fields"},
    field("r-email", "Email", email),
    field("r-password", "Password", password, creating
      ? "Required for a user." : "Leave empty to keep the password."));
  const syncKind = () => { userFields.hidden = !kindUser.checked; };
  kindUser.addEventListener("change", syncKind);
  kindRole.addEventListener("change", syncKind);
  syncKind();
  const save = h("button", {type: "submit"}, creating ? "Create" : "Save");
  const remove = creating ? null : h("button", {type: "button",
    class: "danger", disabled: self, id: "r-delete",
    "aria-describedby": self ? "r-delete-hint" : null,
    onclick: async () => {
      if (!await ctx.confirm(`Delete ${doc.name}?`, "Delete")) {
        remove.focus();
        return;
      }
      try {
        await api.del(`/roles/${id}`, doc.etag);
        ctx.announce(`${doc.name} deleted.`);
        ctx.navigate("#/roles");
      } catch (error) {
        setText(message, error.message);
      }
    }}, "Delete");
  const form = h("form", {class: "card role-form", novalidate: true},
    h("fieldset", {class: "kind"}, h("legend", {}, "Kind"),
      h("label", {for: "kind-user"}, kindUser, " User (can log in)"),
      h("label", {for: "kind-role"}, kindRole,
        " Role (a set of permissions)")),
    field("r-name", "Name", name, "Letters, digits and _.@- (up to 64)."),
    field("r-realname", "Real name", realname), userFields,
    h("div", {class: "field check"}, active, h("label", {for: "r-active"},
      "Active")),
    h("fieldset", {}, h("legend", {}, "Roles it includes"),
      roleBoxes.length ? roleBoxes.map((box) => h("label", {class: "check",
        for: box.id}, box, ` ${box.value}`)) : h("p", {class: "hint"},
        "There are no roles yet.")),
    field("r-permissions", "Permissions (one per line)", permissions,
      "cop (administrator), job://<regex>/r or /x, api://<regex>[/crud], " +
      "app://<regex>"),
    message, h("div", {class: "actions"}, save, remove,
      self ? h("span", {class: "hint", id: "r-delete-hint"},
        "You cannot delete yourself.") : null,
      h("a", {href: "#/roles"}, "Back to the list")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setText(message, "");
    const user = kindUser.checked;
    const fields = {name: name.value.trim(),
      realname: realname.value.trim() || null,
      is_active: active.checked,
      roles: roleBoxes.filter((box) => box.checked).map((box) => box.value),
      permissions: permissions.value.split("\n").map((line) => line.trim())
        .filter(Boolean)};
    if (!fields.name) {
      setText(message, "Enter a name.");
      name.focus();
      return;
    }
    if (user) {
      fields.email = email.value.trim();
      if (!fields.email) {
        setText(message, "A user needs an email address.");
        email.focus();
        return;
      }
      if (password.value) fields.password = password.value;
      else if (creating) {
        setText(message, "A new user needs a password.");
        password.focus();
        return;
      }
    }
    save.disabled = true;
    try {
      if (creating) await api.post("/roles", fields);
      else await api.put(`/roles/${id}`, fields, doc.etag);
      ctx.announce(`${fields.name} saved.`);
      ctx.navigate("#/roles");
    } catch (error) {
      setText(message, error.status === 409 && !creating
        ? `${error.message}. Reload the page to edit the current version.`
        : error.message);
      save.disabled = false;
    }
  });
  ctx.main.append(h("p", {class: "crumbs"}, h("a", {href: "#/roles"},
    "← Users and roles")),
  h("h1", {}, creating ? "New user or role" : `Edit ${doc.name}`), form);
  ctx.setTitle(creating ? "New user or role" : `Edit ${doc.name}`);
  return null;
}
