// Start a job: pick one of the jobs the user may execute (GET /job/list),
// edit its arguments as JSON (checked before sending), POST /job and
// follow the new job in its detail view.

import {api} from "../api.js";
import {h, setText, replace} from "../util.js";

/** The arguments of `text` as an object, or an error message. */
export function parseArgs(text) {
  if (!text.trim()) return {args: {}};
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return {error: `Not valid JSON: ${error.message}`};
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return {error: "The arguments must be a JSON object, " +
      "e.g. {\"sleep\": 3}."};
  }
  return {args: value};
}

/** Render the start form. */
export async function render(ctx) {
  const jobs = (await api.get("/job/list")).data || [];
  const heading = h("h1", {}, "Start a job");
  if (!jobs.length) {
    ctx.main.append(heading, h("p", {class: "card"},
      "There are no jobs you may start. Jobs are listed once they are ",
      "registered (by the scheduler or ", h("code", {},
        "coco --jobs --introspect"), ") and you have a ",
      h("code", {}, "job://…/x"), " permission for them."));
    return null;
  }
  const wanted = ctx.params.get("job");
  const search = h("input", {id: "start-search", type: "search",
    placeholder: "part of the name", spellcheck: "false",
    "aria-controls": "start-job"});
  const picker = h("select", {id: "start-job", name: "qual_name",
    required: true, size: String(Math.min(8, Math.max(2, jobs.length))),
    "aria-describedby": "start-doc"});
  const docText = h("p", {id: "start-doc", class: "doc"});
  const args = h("textarea", {id: "start-args", name: "args", rows: "6",
    spellcheck: "false",
    "aria-describedby": "start-args-hint start-args-error"},
  "{}");
  const argsError = h("p", {id: "start-args-error", class: "error",
    "aria-live": "polite"});
  const message = h("p", {class: "error", role: "alert"});
  const submit = h("button", {type: "submit"}, "Start job");

  function fill() {
    const needle = search.value.trim().toLowerCase();
    const current = picker.value;
    replace(picker, jobs.filter((job) => job.name.toLowerCase().includes(
      needle)).map((job) => h("option", {value: job.name,
      selected: job.name === current}, job.name)));
    if (!picker.value && picker.options.length) picker.selectedIndex = 0;
    describe();
  }

  function describe() {
    const job = jobs.find((each) => each.name === picker.value);
    setText(docText, job ? (job.doc || "No description.") +
      (job.author ? ` (author: ${job.author})` : "") : "No job matches.");
  }

  function check() {
    const result = parseArgs(args.value);
    args.setAttribute("aria-invalid", String(Boolean(result.error)));
    setText(argsError, result.error || "");
    return result;
  }

  search.addEventListener("input", fill);
  picker.addEventListener("change", describe);
  args.addEventListener("input", check);
  const form = h("form", {class: "card start", novalidate: true},
    h("div", {class: "field"}, h("label", {for: "start-search"},
      "Find a job"), search),
    h("div", {class: "field"}, h("label", {for: "start-job"}, "Job"),
      picker, docText),
    h("div", {class: "field"}, h("label", {for: "start-args"},
      "Arguments (JSON object)"), args,
    h("p", {id: "start-args-hint", class: "hint"},
      "For example {\"sleep\": 3}. Leave {} for the defaults."), argsError),
    message, h("div", {class: "actions"}, submit));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setText(message, "");
    const result = check();
    if (result.error) {
      args.focus();
      return;
    }
    if (!picker.value) {
      setText(message, "Choose a job to start.");
      picker.focus();
      return;
    }
    submit.disabled = true;
    try {
      const answer = await api.post("/job", {qual_name: picker.value,
        args: result.args});
      ctx.announce(`Job ${answer.data.name.split(".").pop()} enqueued.`);
      ctx.navigate(`#/job/${answer.data._id}`);
    } catch (error) {
      setText(message, error.message);
      submit.disabled = false;
    }
  });
  ctx.main.append(heading, form);
  fill();
  if (wanted && jobs.some((job) => job.name === wanted)) {
    picker.value = wanted;
    describe();
  }
  return null;
}
