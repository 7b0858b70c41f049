// The events feed (new events at the top, live), the automations page's "New automation" and a
// deployment's "Add a schedule" with the preview of its next times.
// Like the rest of the UI, every change is a call of the API's own routes (ui.js: api()).
"use strict";

const FEED_LIMIT = 500;  // live events kept on the page; older ones are a page away

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function jsonSection(title, value, body) {
  body.append(element("h3", "", title));
  const empty = !value || (Array.isArray(value) ? value.length === 0 : Object.keys(value).length === 0);
  if (empty) { body.append(element("p", "muted", "None.")); return; }
  const pre = element("pre", "json", JSON.stringify(value, null, 2));
  body.append(pre);
}

// One event as the page's template draws it (events.html, event_item).
function eventItem(event) {
  const item = element("li", "event new");
  item.dataset.eventId = event.id;
  const details = element("details");
  const summary = element("summary");
  const time = element("time", "", utc(event.occurred));
  time.dateTime = event.occurred;
  const resource = event.resource["orchestrator.resource.name"] || event.resource["orchestrator.resource.id"];
  summary.append(time, " ", element("code", "event-name", event.event), " ", element("span", "muted event-resource", resource));
  const body = element("div", "event-body");
  const rid = event.resource["orchestrator.resource.id"] || "";
  if (rid.startsWith(RUN_PREFIX)) {
    const link = element("a", "", "Open the run");
    link.href = `/runs/${rid.slice(RUN_PREFIX.length)}`;
    const p = element("p");
    p.append(link);
    body.append(p);
  }
  jsonSection("Resource", event.resource, body);
  jsonSection("Related", event.related, body);
  jsonSection("Payload", event.payload, body);
  const facts = element("p", "muted");
  facts.append("id ", element("code", "", event.id));
  if (event.follows) facts.append(" · follows ", element("code", "", event.follows));
  facts.append(` · received ${utc(event.received)}`);
  body.append(facts);
  details.append(summary, body);
  item.append(details);
  return item;
}

function setUpEventFeed(feed) {
  const seen = new Set([...feed.querySelectorAll("[data-event-id]")].map((item) => item.dataset.eventId));
  const params = JSON.parse(feed.dataset.stream);
  const add = (event) => {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    document.getElementById("no-events")?.remove();
    feed.prepend(eventItem(event));
    while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
  };
  // Once the stream listens, the newest page is read again: events stored while the page was on
  // its way (before the stream opened) are added too, the ones shown already are skipped.
  const caughtUp = async () => {
    const answer = await api("GET", `/api/events?${streamQuery(params)}&limit=50`);
    if (answer.ok) [...answer.data.events].reverse().forEach(add);
    feed.dataset.live = "open";
  };
  Live.stream(params, add, caughtUp);
}

// --- automations: create from YAML or JSON ----------------------------------------------------

function locText(loc) {
  const path = (loc || []).filter((part, index) => !(index === 0 && part === "body"));
  return path.length ? `${path.join(".")}: ` : "";
}

function showProblems(box, input, detail) {
  box.replaceChildren(...(Array.isArray(detail) ? detail : [{ msg: typeof detail === "string" ? detail : JSON.stringify(detail) }])
    .map((d) => element("li", "", `${locText(d.loc)}${d.msg}`)));
  box.hidden = false;
  input.setAttribute("aria-invalid", "true");
  input.focus();
}

function setUpAutomationForm(form) {
  const input = document.getElementById("automation-text");
  const box = document.getElementById("automation-text-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    box.hidden = true;
    input.removeAttribute("aria-invalid");
    const text = input.value.trim();
    if (!text) { showProblems(box, input, "paste a definition first"); return; }
    let definition;
    if (text.startsWith("{")) {
      try { definition = JSON.parse(text); } catch (error) { showProblems(box, input, `not valid JSON: ${error.message}`); return; }
    } else {
      // YAML is read by the server (no parser in the page); that call changes nothing.
      let response;
      try {
        response = await fetch("/ui/yaml", { method: "POST", body: text, credentials: "same-origin",
                                             headers: { "Content-Type": "text/plain", "X-Orch-UI": "1" } });
      } catch (error) { showProblems(box, input, `the server cannot be reached (${error.message})`); return; }
      const data = await response.json();
      if (!response.ok) { showProblems(box, input, data.detail); return; }
      definition = data;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    const answer = await api("POST", "/api/automations", definition);
    submit.disabled = false;
    if (answer.ok) { location.reload(); return; }
    showProblems(box, input, answer.data && answer.data.detail);
  });
}

// --- a deployment's new schedule: its next times previewed (POST .../schedules/preview) ---------

const PREVIEW_DELAY_MS = 300;

function scheduleBody(form) {
  const kind = form.querySelector("input[name=kind]:checked").value;
  const raw = document.getElementById("schedule-value").value.trim();
  const body = { timezone: document.getElementById("schedule-timezone").value.trim() || "UTC" };
  body[kind] = kind === "interval" && /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
  return body;
}

function scheduleProblems(form, detail) {
  // The API's 422: a message about the timezone goes under that field, the rest under the expression.
  const messages = Array.isArray(detail) ? detail.map((d) => d.msg) : [typeof detail === "string" ? detail : JSON.stringify(detail)];
  for (const message of messages) {
    const id = /zone/i.test(message) ? "schedule-timezone" : "schedule-value";
    showError(id, message);
  }
}

function setUpScheduleForm(form) {
  const list = document.getElementById("schedule-preview");
  const hint = document.getElementById("schedule-hint");
  const hints = JSON.parse(hint.dataset.hints);
  const base = `/api/deployments/${form.dataset.deployment}/schedules`;
  let timer = null;
  let asked = 0;
  const about = document.getElementById("schedule-preview-for");
  const preview = async () => {
    clearErrors(form);
    about.textContent = "";
    if (!document.getElementById("schedule-value").value.trim()) {
      list.replaceChildren(element("li", "muted", "Type an expression to see its next times."));
      return;
    }
    const mine = ++asked;
    const answer = await api("POST", `${base}/preview?count=5`, scheduleBody(form));
    if (mine !== asked) return;  // a later keystroke asked again
    if (!answer.ok) {
      list.replaceChildren(element("li", "muted", "No preview: see the error above."));
      scheduleProblems(form, answer.data && answer.data.detail);
      return;
    }
    const times = answer.data.next.map((t) => element("li", "", t.replace("T", " ")));
    list.replaceChildren(...(times.length ? times : [element("li", "muted", "No future times.")]));
    about.textContent = answer.data.description;
  };
  const later = () => {
    // What is shown no longer matches the fields: greyed until the new answer.
    list.classList.add("stale");
    about.textContent = "";
    clearTimeout(timer);
    timer = setTimeout(async () => { await preview(); list.classList.remove("stale"); }, PREVIEW_DELAY_MS);
  };
  form.addEventListener("input", later);
  form.querySelectorAll("input[name=kind]").forEach((radio) => radio.addEventListener("change", () => {
    hint.textContent = hints[radio.value];
    later();
  }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const answer = await api("POST", base, scheduleBody(form));
    if (answer.ok) { location.reload(); return; }
    if (answer.status === 409) { showError("schedule-value", describe(answer.data)).focus(); return; }
    scheduleProblems(form, answer.data && answer.data.detail);
    form.querySelector("[aria-invalid=true]")?.focus();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const scheduleForm = document.getElementById("schedule-form");
  if (scheduleForm) setUpScheduleForm(scheduleForm);
  const feed = document.getElementById("event-feed");
  if (feed && feed.dataset.stream) setUpEventFeed(feed);
  const automationForm = document.getElementById("automation-form");
  if (automationForm) setUpAutomationForm(automationForm);
});
