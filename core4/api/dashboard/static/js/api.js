// The REST API of core4 (/core4/api/v1) with the login cookie, and the
// user's permissions evaluated as the server does.

export const API = "/core4/api/v1";
export const SESSION = "/_dashboard/session";
export const QUEUE_STREAM = "/_dashboard/stream/queue";
export const HEALTH = "/_dashboard/health";
/** Statuses of an outage (not a mistake of the request): no answer at all
 * (0: the server is away) and 503 (the database is away). */
export const UNAVAILABLE = [0, 503];

let available = true;

/**
 * Record whether the database (and the server) can be reached; every change
 * is announced as the window event "core4:database" with {available,
 * status, message}. Requests only ever report an outage; the app's probe
 * (GET /_dashboard/health) and live streams report the end of it.
 */
export function setAvailable(value, status = 200, message = "") {
  if (value === available) return;
  available = value;
  window.dispatchEvent(new CustomEvent("core4:database", {detail: {
    available: value, status, message}}));
}

/** True unless an outage was seen and has not ended yet. */
export function isAvailable() {
  return available;
}

/** An answer of the API other than 2xx: status and its one-line message. */
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message || `request failed (${status})`);
    this.status = status;
    this.body = body;
  }
}

/** Query string of `params` without empty values. */
export function query(params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === null || value === undefined || value === "") continue;
    search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * Send one request; answer the envelope ({data, message, paging...}).
 * `path` is below /core4/api/v1 unless it starts with "/_" (dashboard).
 * A 401 (login expired) announces "core4:logout" to the app; an outage
 * (no answer, or 503) is reported with setAvailable(false).
 */
export async function request(method, path, {json, params, etag} = {}) {
  const url = (path.startsWith("/_") ? path : API + path) + query(params);
  const headers = {Accept: "application/json"};
  const init = {method, headers, credentials: "same-origin",
    cache: "no-store"};
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  if (etag) headers["If-Match"] = `"${etag}"`;
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    setAvailable(false, 0, "the server cannot be reached");
    throw new ApiError(0, "the server cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok) {
    if (UNAVAILABLE.includes(response.status)) {
      setAvailable(false, response.status, body && body.message);
    }
    if (response.status === 401 && !path.startsWith("/login")) {
      window.dispatchEvent(new CustomEvent("core4:logout", {detail: {
        message: "Your session has ended: please log in again."}}));
    }
    throw new ApiError(response.status, body && body.message, body);
  }
  return body || {};
}

export const api = {
  get: (path, params) => request("GET", path, {params}),
  post: (path, json) => request("POST", path, {json}),
  put: (path, json, etag) => request("PUT", path, {json, etag}),
  del: (path, etag) => request("DELETE", path, {etag}),
};

/** Python's re.match at the start of the name, in JavaScript. */
function startPattern(source) {
  try {
    return new RegExp(`^(?:${source})`);
  } catch (error) {
    return null; // not valid in JavaScript: grants nothing here
  }
}

/**
 * The effective permissions of the logged-in user (as GET /profile lists
 * them): "cop" is the administrator, "job://<regex>/r|x" read or execute
 * the jobs whose name matches <regex> from its start.
 */
export class Permissions {
  constructor(strings = []) {
    this.strings = strings;
    this.admin = strings.includes("cop");
    this.jobs = [];
    for (const text of strings) {
      if (!text.startsWith("job://")) continue;
      const rest = text.slice("job://".length);
      const slash = rest.lastIndexOf("/");
      const letter = rest.slice(slash + 1);
      const pattern = slash > 0 ? startPattern(rest.slice(0, slash)) : null;
      if (pattern && (letter === "r" || letter === "x")) {
        this.jobs.push({pattern, letter});
      }
    }
  }

  canRead(name) {
    return this.admin || this.jobs.some((rule) => rule.pattern.test(name));
  }

  canExecute(name) {
    return this.admin || this.jobs.some(
      (rule) => rule.letter === "x" && rule.pattern.test(name));
  }
}
