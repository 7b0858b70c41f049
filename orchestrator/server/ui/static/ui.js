// The UI's one script. Every change is a call of the API's own routes (/api/...), with the same
// checks as any client: the page sends the header X-Orch-UI, and the browser sends the key's
// HTTP-only cookie when keys are in use. No framework, nothing loaded from elsewhere.
"use strict";

const HEADERS = { "Content-Type": "application/json", "X-Orch-UI": "1" };
const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function api(method, path, body) {
  const options = { method, headers: HEADERS, credentials: "same-origin" };
  if (body !== undefined) options.body = JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    return { ok: false, status: 0, data: { detail: `the server cannot be reached (${error.message})` } };
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = { detail: text }; }
  }
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }
  return { ok: response.ok, status: response.status, data };
}

function describe(data) {
  const detail = data && data.detail;
  if (Array.isArray(detail)) return detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return typeof detail === "string" ? detail : JSON.stringify(data);
}

function flash(message, bad) {
  const box = document.getElementById("flash");
  box.textContent = message;
  box.className = bad ? "bad" : "";
}

function utc(iso) {
  return iso ? iso.replace("T", " ").slice(0, 19) + " UTC" : "—";
}

// --- buttons: data-run (create a run), data-post, data-patch (with data-body), data-delete ---------

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-run], button[data-post], button[data-patch], button[data-delete]");
  if (!button) return;
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    let answer;
    if (button.dataset.run) {
      answer = await api("POST", `/api/deployments/${button.dataset.run}/runs`, body || {});
      if (answer.ok) { location.href = `/runs/${answer.data.id}`; return; }
    } else if (button.dataset.post) {
      answer = await api("POST", button.dataset.post, body);
    } else if (button.dataset.delete) {
      answer = await api("DELETE", button.dataset.delete);
    } else {
      answer = await api("PATCH", button.dataset.patch, body);
    }
    if (!answer.ok) { flash(describe(answer.data), true); return; }
    if (button.hasAttribute("data-reload")) { location.reload(); return; }
    flash("Done.");
  } finally {
    button.disabled = false;
  }
});

// --- the runs list: select runs, cancel them (each through the API's cancel) -----------------------

function selectedRuns() {
  return [...document.querySelectorAll("#run-list input[name=run]:checked:not(:disabled)")];
}

function setUpBulkCancel(button) {
  const update = () => { button.disabled = selectedRuns().length === 0; };
  document.addEventListener("change", (event) => { if (event.target.name === "run") update(); });
  document.addEventListener("live:refreshed", update);
  update();
  button.addEventListener("click", async () => {
    const boxes = selectedRuns();
    button.disabled = true;
    const failed = [];
    for (const box of boxes) {
      const answer = await api("POST", `/api/flow_runs/${box.value}/cancel`);
      if (answer.ok) box.checked = false;
      else failed.push(`${box.getAttribute("aria-label").replace(/^Select /, "")}: ${describe(answer.data)}`);
    }
    const done = boxes.length - failed.length;
    flash(`Cancelling ${done} run${done === 1 ? "" : "s"}.` + (failed.length ? ` Not cancelled: ${failed.join("; ")}` : ""),
          failed.length > 0);
    update();
  });
}

// --- errors shown next to their field ------------------------------------------------------------

function clearErrors(form) {
  form.querySelectorAll(".error").forEach((el) => { el.hidden = true; el.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
}

function showError(inputId, message) {
  const input = document.getElementById(inputId);
  const box = document.getElementById(`${inputId}-error`) || document.getElementById("form-error");
  box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
  box.hidden = false;
  if (input) input.setAttribute("aria-invalid", "true");
  return input || box;
}

// --- custom run: the form generated from the parameter schema (forms.py) --------------------------

function readField(field) {
  // [present, value, problem]: an empty field is left out (the deployment's default applies).
  const kind = field.dataset.kind;
  const input = field.querySelector("input, select, textarea");
  if (kind === "boolean") return [true, input.checked, null];
  const raw = input.value.trim();
  if (raw === "") return [false, null, null];
  if (kind === "integer" || kind === "number") {
    const number = Number(raw);
    return [true, Number.isFinite(number) ? number : raw, null];  // the API names what is wrong
  }
  if (kind === "enum" || kind === "json") {
    try { return [true, JSON.parse(raw), null]; } catch (error) { return [false, null, `not valid JSON: ${error.message}`]; }
  }
  return [true, input.value, null];
}

function formValues(form, group) {
  // The generated fields of one group ("parameters" or "job_variables"): [values, problems].
  const values = {};
  const problems = [];
  form.querySelectorAll(`.field[data-field-of="${group}"]`).forEach((field) => {
    const [present, value, problem] = readField(field);
    if (problem) problems.push([field.querySelector("input, select, textarea").id, problem]);
    else if (present) values[field.dataset.name] = value;
  });
  return [values, problems];
}

function jsonObject(inputId, problems) {
  const raw = document.getElementById(inputId).value.trim();
  if (!raw) return {};
  try {
    const value = JSON.parse(raw);
    if (value && typeof value === "object" && !Array.isArray(value)) return value;
    problems.push([inputId, "must be a JSON object: {...}"]);
  } catch (error) {
    problems.push([inputId, `not valid JSON: ${error.message}`]);
  }
  return {};
}

function inputForLoc(loc, rawMode) {
  const path = loc[0] === "body" ? loc.slice(1) : loc;
  if (path[0] === "parameters") {
    if (rawMode || path.length < 2) return "raw-parameters";
    return document.getElementById(`param-${path[1]}`) ? `param-${path[1]}` : "form-error";
  }
  if (path[0] === "job_variables" && path.length > 1 && document.getElementById(`jobvar-${path[1]}`)) {
    return `jobvar-${path[1]}`;
  }
  return { job_variables: "run-job-variables", tags: "run-tags", scheduled_time: "run-at" }[path[0]] || "form-error";
}

function setUpCustomRun(form) {
  const toggle = document.getElementById("raw-toggle");
  const rawBox = document.getElementById("raw-box");
  toggle.addEventListener("change", () => {
    const [values] = formValues(form, "parameters");
    document.getElementById("raw-parameters").value = JSON.stringify(values, null, 2);
    rawBox.hidden = !toggle.checked;
    form.querySelectorAll('.field[data-field-of="parameters"]').forEach((field) => { field.hidden = toggle.checked; });
  });
  document.getElementById("run-at").addEventListener("input", () => {
    document.getElementById("start-at-choice").checked = true;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const problems = [];
    let parameters;
    if (toggle.checked) {
      parameters = jsonObject("raw-parameters", problems);
    } else {
      let fieldProblems;
      [parameters, fieldProblems] = formValues(form, "parameters");
      problems.push(...fieldProblems);
    }
    const [jobVariables, jobProblems] = formValues(form, "job_variables");
    problems.push(...jobProblems);
    const body = {
      parameters,
      job_variables: { ...jobVariables, ...jsonObject("run-job-variables", problems) },
      tags: document.getElementById("run-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
    };
    if (form.querySelector("input[name=start]:checked").value === "at") {
      const at = document.getElementById("run-at").value;
      if (!at) problems.push(["run-at", "choose a start time"]);
      else body.scheduled_time = new Date(at).toISOString();
    }
    let first = null;
    if (problems.length) {
      problems.forEach(([id, message]) => { const shown = showError(id, message); first = first || shown; });
      first.focus();
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    const answer = await api("POST", `/api/deployments/${form.dataset.deployment}/runs`, body);
    submit.disabled = false;
    if (answer.ok) { location.href = `/runs/${answer.data.id}`; return; }
    const detail = answer.data && answer.data.detail;
    if (Array.isArray(detail)) {
      detail.forEach((d) => {
        const shown = showError(inputForLoc(d.loc || [], toggle.checked), d.msg);
        first = first || shown;
      });
    } else {
      first = showError("form-error", describe(answer.data));
    }
    first.focus();
  });
}

// --- forms that PATCH one field: a pool's concurrency limit, its base job template ---------------

function setUpPatchForm(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const input = form.querySelector("input, textarea");
    const raw = input.value.trim();
    let value;
    if (form.hasAttribute("data-json")) {
      try { value = JSON.parse(raw); } catch (error) { showError(input.id, `not valid JSON: ${error.message}`).focus(); return; }
    } else {
      value = raw === "" ? null : (Number.isFinite(Number(raw)) ? Number(raw) : raw);
    }
    const answer = await api("PATCH", form.dataset.patchForm, { [form.dataset.field]: value });
    if (answer.ok) { location.reload(); return; }
    showError(input.id, describe(answer.data)).focus();
  });
}

// --- a pool's page: the job a deployment would get (GET /api/deployments/{id}/job_preview) ---------

function setUpJobPreview(form) {
  const select = document.getElementById("preview-deployment");
  const out = document.getElementById("job-preview");
  const error = document.getElementById("job-preview-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const answer = await api("GET", `/api/deployments/${encodeURIComponent(select.value)}/job_preview`);
    if (!answer.ok) {
      out.hidden = true;
      error.textContent = describe(answer.data);
      error.hidden = false;
      return;
    }
    out.textContent = JSON.stringify(answer.data.job, null, 2);
    out.hidden = false;
  });
}

// --- a run's page: its state and logs, live (live.js) ----------------------------------------

const LEVELS = { 10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL" };

function setUpRunPage(root) {
  const id = root.dataset.run;
  let seen = `${root.dataset.state}`;
  let over = FINAL.has(root.dataset.state);
  const logs = document.getElementById("logs");
  const follow = document.getElementById("follow-logs");

  async function refreshTimeline() {
    const answer = await api("GET", `/api/flow_runs/${id}/states`);
    if (!answer.ok) return;
    const list = document.getElementById("timeline");
    list.replaceChildren(...answer.data.map((s) => {
      const li = document.createElement("li");
      li.append(stateBadge(s), " ");
      const when = document.createElement("span");
      when.className = "muted";
      when.textContent = utc(s.timestamp);
      li.append(when);
      if (s.message) { const m = document.createElement("div"); m.className = "muted"; m.textContent = s.message; li.append(m); }
      return li;
    }));
  }

  function onRun(run) {
    const key = `${run.state.type}/${run.state.name}`;
    document.getElementById("run-state").replaceChildren(stateBadge(run.state));
    root.dataset.state = run.state.type;
    document.getElementById("run-message").textContent = run.state.message || "";
    document.getElementById("run-start").textContent = utc(run.start_time);
    document.getElementById("run-end").textContent = utc(run.end_time);
    document.getElementById("run-worker").textContent = run.worker_name || "—";
    document.querySelector("#run-infra code").textContent = run.infrastructure_id || "—";
    const cancel = document.getElementById("cancel-run");
    cancel.hidden = FINAL.has(run.state.type) || run.state.type === "CANCELLING";
    over = FINAL.has(run.state.type);
    if (key !== seen) { seen = key; refreshTimeline(); }
  }

  function onLogs(batch) {
    document.getElementById("logs-empty")?.remove();
    for (const log of batch) {
      const line = document.createElement("div");
      const level = LEVELS[log.level] || `L${log.level}`;
      line.className = `log ${level.toLowerCase()}`;
      const time = document.createElement("time");
      time.textContent = log.timestamp.slice(11, 19);
      time.dateTime = log.timestamp;
      const lvl = document.createElement("span");
      lvl.className = "lvl";
      lvl.textContent = level;
      const message = document.createElement("span");
      message.textContent = log.message;
      line.append(time, lvl, message);
      logs.append(line);
    }
    if (follow.checked) logs.scrollTop = logs.scrollHeight;
  }

  seen = `${root.dataset.state}/${document.querySelector("#run-state [data-state]").textContent}`;
  if (!over) Live.watchRun(id, onRun);
  Live.followLogs(id, onLogs, () => over);
}

function stateBadge(state) {
  const span = document.createElement("span");
  span.className = `state state-${state.type.toLowerCase()}`;
  span.dataset.state = state.type;
  span.textContent = state.name;
  return span;
}

document.addEventListener("DOMContentLoaded", () => {
  const customRun = document.getElementById("custom-run-form");
  if (customRun) setUpCustomRun(customRun);
  document.querySelectorAll("form[data-patch-form]").forEach(setUpPatchForm);
  const run = document.getElementById("run");
  if (run) setUpRunPage(run);
  const jobPreview = document.getElementById("job-preview-form");
  if (jobPreview) setUpJobPreview(jobPreview);
  const bulkCancel = document.getElementById("cancel-selected");
  if (bulkCancel) setUpBulkCancel(bulkCancel);
});
