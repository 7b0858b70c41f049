// Live pages: the one place a page learns of changes, from the API's event stream
// (GET /api/events/stream, Server-Sent Events, docs/events.md) filtered to what the page shows.
//
// The stream is read with fetch, not EventSource: an EventSource cannot send the X-Orch-UI header
// the API wants beside the key's cookie. Reconnecting sends the last id seen as Last-Event-ID,
// so the API resumes with no gap and no duplicate, as it would for an EventSource.
"use strict";

const STREAM_RETRY_MS = 1000;
const REFRESH_MS = 1000;  // a page re-reads its live parts at most this often (bursts coalesce)
const LOG_BATCH = 1000;
const RUN_PREFIX = "orchestrator.flow-run.";

function sseBlock(block) {
  // One message: {id, event, data, comment}; lines "field: value", ":" starts a comment.
  const message = { event: "message", data: "", comment: "" };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) { message.comment += line.slice(1).trim(); continue; }
    const at = line.indexOf(":");
    const field = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    if (field === "data") message.data += (message.data ? "\n" : "") + value;
    else if (field === "id" || field === "event") message[field] = value;
  }
  return message;
}

function streamQuery(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    for (const one of [].concat(value)) if (one) query.append(key, one);
  }
  return query.toString();
}

function runIdOf(event) {
  const id = event.resource["orchestrator.resource.id"] || "";
  return id.startsWith(RUN_PREFIX) ? id.slice(RUN_PREFIX.length) : null;
}

function throttled(action, ms) {
  // Calls action at most once every ms; calls in between make one more call at the end.
  let timer = null;
  let wanted = false;
  const fire = async () => {
    wanted = false;
    await action();
    timer = setTimeout(() => { timer = null; if (wanted) fire(); }, ms);
  };
  return () => { if (timer) wanted = true; else fire(); };
}

const Live = {
  // Calls onEvent(event) for every event matching params ({event: [globs], resource, related,
  // since, ...}) stored from now on; onOpen() each time the stream is (re)subscribed, so a page
  // can read once what changed before. Returns a function that stops it.
  stream(params, onEvent, onOpen) {
    const controller = new AbortController();
    const path = `/api/events/stream?${streamQuery(params)}`;
    let last = null;
    (async () => {
      while (!controller.signal.aborted) {
        try {
          const headers = { "X-Orch-UI": "1", Accept: "text/event-stream" };
          if (last) headers["Last-Event-ID"] = last;
          const response = await fetch(path, { headers, credentials: "same-origin", signal: controller.signal });
          if (response.status === 401) {
            location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
            return;
          }
          if (!response.ok) throw new Error(`the stream answered ${response.status}`);
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          let opened = false;
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value.replace(/\r\n?/g, "\n");
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              const message = sseBlock(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
              // The first block (": open <cursor>") comes once the server listens: from then on
              // nothing is missed, so that is when the page reads what it may have missed.
              if (!opened) { opened = true; if (onOpen) onOpen(); }
              if (message.id) last = message.id;
              if (message.event === "event" && message.data) onEvent(JSON.parse(message.data));
            }
          }
        } catch (error) {
          if (controller.signal.aborted) return;
        }
        await pause(STREAM_RETRY_MS);
      }
    })();
    return () => controller.abort();
  },

  // A run: onRun(run) with the run as the API reads it, at the start and after each of its state
  // changes, until it ends.
  watchRun(id, onRun) {
    let stop = () => {};
    const read = throttled(async () => {
      const answer = await api("GET", `/api/flow_runs/${id}`);
      if (!answer.ok) return;
      onRun(answer.data);
      if (FINAL.has(answer.data.state.type)) stop();
    }, 200);
    stop = Live.stream({ event: `${RUN_PREFIX}*`, resource: `${RUN_PREFIX}${id}` }, read, read);
  },

  // A run's logs: the API's logs endpoint (after=<last id>) once a second until the run has ended
  // and its last logs are read. Logs are not events, so they keep this path.
  async followLogs(id, onLogs, isOver) {
    let after = 0;
    for (;;) {
      const over = isOver();  // read before: the logs written before the end are all read once more
      const answer = await api("GET", `/api/flow_runs/${id}/logs?after=${after}&limit=${LOG_BATCH}`);
      const logs = answer.ok ? answer.data : [];
      if (logs.length) { after = logs[logs.length - 1].id; onLogs(logs); }
      if (logs.length === LOG_BATCH) continue;
      if (over) return;
      await pause(1000);
    }
  },

  // A page's parts marked data-live-region="<name>" are read again (this same address, as HTML)
  // and replaced. Ticked checkboxes stay ticked, the element with focus keeps it.
  async refreshRegions() {
    let response;
    try {
      response = await fetch(location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    } catch (error) {
      return;
    }
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const old of document.querySelectorAll("[data-live-region]")) {
      const name = old.dataset.liveRegion;
      const next = fresh.querySelector(`[data-live-region="${CSS.escape(name)}"]`);
      if (!next || old.contains(document.activeElement)) continue;  // never pull a field from under the user
      const ticked = new Set([...old.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value));
      next.querySelectorAll("input[type=checkbox]").forEach((box) => { box.checked = ticked.has(box.value); });
      old.replaceWith(document.importNode(next, true));
    }
    document.dispatchEvent(new CustomEvent("live:refreshed"));
  },

  // A page that declares <main data-live='{"stream": {...}, "rows": true}'>: each matching event
  // updates the row of its run in place (data-run, from the state labels the event carries), and
  // anything else (a run not shown yet, counts) re-reads the page's live regions.
  // With "every": <ms>, the live regions are also read again that often (a pool page's "last
  // heartbeat ... ago": heartbeats are not events, only a worker going online or offline is).
  setUpPage(config) {
    const refresh = throttled(Live.refreshRegions, REFRESH_MS);
    if (config.every) setInterval(() => { if (!document.hidden) refresh(); }, Math.max(config.every, REFRESH_MS));
    Live.stream(config.stream, (event) => {
      const runId = runIdOf(event);
      const rows = config.rows && runId ? document.querySelectorAll(`tr[data-run="${runId}"]`) : [];
      if (!rows.length) { if (config.refresh !== false) refresh(); return; }
      const type = event.resource["orchestrator.state-type"];
      const name = event.resource["orchestrator.state-name"];
      if (!type) return;
      rows.forEach((row) => {
        const cell = row.querySelector("[data-state]");
        if (cell) cell.replaceWith(stateBadge({ type, name: name || type }));
        row.dataset.stateType = type;
        const box = row.querySelector("input[type=checkbox]");
        if (box) box.disabled = FINAL.has(type);
      });
    }, refresh);  // on (re)subscribing: what changed while the page was on its way
  },
};

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("main");
  if (main && main.dataset.live) Live.setUpPage(JSON.parse(main.dataset.live));
});
