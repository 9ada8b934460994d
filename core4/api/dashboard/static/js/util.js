// DOM helpers and formatting shared by all views. Text is always set as
// text (never as HTML): nothing a job or a user stores can inject markup.

/**
 * Create an element: h("a", {href: "#/x", class: "y", onclick: fn}, "text").
 * Attributes named on* become event listeners, `class` the class list,
 * `dataset` data attributes; false/null attributes are left out;
 * children may be strings, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "path", "line", "text", "g", "title", "desc", "circle",
    "polyline", "rect"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "value" && !svg) {
      el.value = value;
    } else if (key === "checked" || key === "disabled" || key === "selected") {
      el[key] = Boolean(value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

/** Append children (strings, nodes, nested arrays; null is skipped). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(
      String(child)));
  }
  return el;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Set the text of `el` only when it changed (no churn for assistive
 * technology while a view updates live). */
export function setText(el, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (el.textContent !== value) el.textContent = value;
}

let counter = 0;
/** A unique element id with `prefix`. */
export function uid(prefix = "id") {
  counter += 1;
  return `${prefix}-${counter}`;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** An ISO 8601 string (or epoch seconds) as local "YYYY-MM-DD HH:MM:SS". */
export function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "";
  const date = typeof value === "number" ? new Date(value * 1000)
    : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-` +
    `${pad(date.getDate())} ${pad(date.getHours())}:` +
    `${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** ISO 8601 or epoch seconds as local "HH:MM:SS" (with milliseconds if
 * asked). */
export function fmtClock(value, millis = false) {
  const date = typeof value === "number" ? new Date(value * 1000)
    : new Date(value);
  if (Number.isNaN(date.getTime())) return "";
  const base = `${pad(date.getHours())}:${pad(date.getMinutes())}:` +
    `${pad(date.getSeconds())}`;
  return millis ? `${base}.${pad(date.getMilliseconds(), 3)}` : base;
}

/** Seconds as "0.4 s", "12 s", "3 min 4 s", "2 h 5 min", "3 d 4 h". */
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) {
    return "";
  }
  const s = Math.max(0, Number(seconds));
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** A dotted name with line break opportunities after its dots. */
export function dotted(name) {
  const parts = String(name ?? "").split(".");
  return parts.flatMap((part, i) => (i < parts.length - 1
    ? [`${part}.`, document.createElement("wbr")] : [part]));
}

/** Progress 0..1 as a whole percentage. */
export function percent(value) {
  const v = Number(value);
  return Number.isFinite(v) ? Math.round(Math.min(1, Math.max(0, v)) * 100)
    : 0;
}

/** A progress bar: role=progressbar with its value, a bar and the text. */
export function progressBar(label) {
  const fill = h("span", {class: "bar-fill"});
  const text = h("span", {class: "bar-text"});
  const el = h("span", {class: "bar", role: "progressbar",
    "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": label},
  h("span", {class: "bar-track"}, fill), text);
  el.update = (value) => {
    const p = percent(value);
    if (el.getAttribute("aria-valuenow") !== String(p)) {
      el.setAttribute("aria-valuenow", String(p));
      fill.style.width = `${p}%`;
      text.textContent = `${p} %`;
    }
  };
  el.update(0);
  return el;
}

/** A state badge (colour by state, always with the state's name). */
export function stateBadge(state) {
  return h("span", {class: `state state-${state || "unknown"}`},
    state || "unknown");
}

/** The flags of a job document as short labels. */
export function flagList(flags) {
  const names = {zombie: "zombie", nonstop: "non-stop", killed: "killed",
    removed: "removed"};
  return Object.entries(names).filter(([key]) => flags && flags[key])
    .map(([, label]) => label);
}

/** A job's attempts as "left/allowed left". */
export function fmtAttempts(doc) {
  if (doc.attempts === undefined) return "";
  return `${doc.attempts_left ?? "?"}/${doc.attempts} left`;
}

/** JSON of a value, indented. */
export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** The short, one-line text of an error for the user. */
export function errorText(error) {
  if (!error) return "";
  return error.message || String(error);
}
