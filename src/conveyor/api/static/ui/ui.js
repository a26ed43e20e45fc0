// The Conveyor dashboard: plain modules, no build step. Every value from the API is put into the
// page as text (never as HTML), and every request goes to this origin with the session cookie.

import { ApiError, STATUSES, ago, api, badge, debounce, failure, h, shortId, stream, svg, when } from "./kit.js";

const ACTION_COLOURS = {
  submitted: "#8a94a6", dispatched: "#a0a9b8", claimed: "#2f7fd3", reclaimed: "#7a4fd1", lease_lost: "#e0781a",
  stale_result: "#b7791f", succeeded: "#1f9d55", job_failed: "#d13b3b", retry_scheduled: "#e0a31a",
  cancelled: "#b7791f", republished: "#5c6b82", released: "#5c6b82", retried: "#2f5bd3",
};
const main = document.getElementById("main");
let leave = null; // what the current page must close when another is shown (event streams, timers)

// ------------------------------------------------------------------ sign-in

function showSignin(reason) {
  if (leave) { leave(); leave = null; }
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  document.getElementById("who").textContent = "";
  main.replaceChildren(document.getElementById("signin").content.cloneNode(true));
  if (reason) main.querySelector("form").before(h("p", { class: "error" }, `Your session ended: ${reason}.`));
}

async function signOut() {
  await fetch("/ui/logout", { method: "POST", headers: { "X-Conveyor-UI": "1" }, credentials: "same-origin" });
  showSignin();
}

function showWho(info) {
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  const role = info.admin ? "admin" : "tenant";
  document.getElementById("who").textContent =
    `${info.subject} · ${info.tenant === null ? "all tenants" : `tenant ${info.tenant}`} · ${role}`;
}

// ------------------------------------------------------------------ overview

// A line chart of per-minute values: one polyline per series, gaps where a minute was not recorded.
function chart(minutes, series, { title, unit, id }) {
  const W = 560, H = 170, left = 44, right = 8, top = 10, bottom = 22;
  const values = series.flatMap((sr) => minutes.map((m) => m[sr.key]).filter((v) => v !== null && v !== undefined));
  const max = Math.max(1, ...values);
  const x = (i) => left + (i / Math.max(1, minutes.length - 1)) * (W - left - right);
  const y = (v) => top + (1 - v / max) * (H - top - bottom);
  const g = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, id });
  for (const f of [0, 0.5, 1]) {
    g.append(svg("line", { x1: left, x2: W - right, y1: y(max * f), y2: y(max * f), stroke: "#e3e6eb" }));
    g.append(svg("text", { x: left - 6, y: y(max * f) + 4, "text-anchor": "end" }, fmt(max * f)));
  }
  g.append(svg("text", { x: left, y: H - 6 }, "-60 min"), svg("text", { x: W - right, y: H - 6, "text-anchor": "end" }, "now"));
  for (const sr of series) {
    let path = "";
    let pen = false;
    minutes.forEach((m, i) => {
      const v = m[sr.key];
      if (v === null || v === undefined) { pen = false; return; }
      path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    });
    if (path) g.append(svg("path", { d: path, fill: "none", stroke: sr.colour, "stroke-width": 2, "data-series": sr.key }));
  }
  const last = minutes.filter((m) => m.recorded).at(-1);
  return h("figure", { class: "chart" }, h("figcaption", {}, title, unit ? h("span", { class: "muted" }, ` (${unit})`) : null),
    g, h("div", { class: "legend" }, series.map((sr) => h("span", {}, h("i", { "data-colour-hex": sr.colour }),
      `${sr.label}${last && last[sr.key] !== null && last[sr.key] !== undefined ? `: ${fmt(last[sr.key])}` : ""}`))));
}

function fmt(v) { return v >= 10000 ? `${Math.round(v / 1000)}k` : v >= 100 ? String(Math.round(v)) : String(+v.toFixed(1)); }

function colourDots(root) {
  for (const i of root.querySelectorAll("i[data-colour-hex]")) i.style.background = i.dataset.colourHex;
}

function charts(minutes, admin) {
  const recorded = minutes.some((m) => m.recorded);
  const figures = [
    chart(minutes, [{ key: "submitted", label: "submitted", colour: "#8a94a6" }, { key: "succeeded", label: "succeeded", colour: "#1f9d55" },
      { key: "failed", label: "failed", colour: "#d13b3b" }], { title: "Jobs per minute", id: "chart-throughput" }),
    chart(minutes, [{ key: "p50_ms", label: "p50", colour: "#2f7fd3" }, { key: "p99_ms", label: "p99", colour: "#7a4fd1" }],
      { title: "Submit to finish", unit: "ms", id: "chart-latency" }),
  ];
  if (admin) {
    figures.push(
      chart(minutes, [{ key: "queue_length", label: "queue length", colour: "#2f5bd3" },
        { key: "queue_pending", label: "delivered, not acked", colour: "#e0a31a" },
        { key: "outbox_pending", label: "outbox backlog", colour: "#b7791f" }], { title: "Queue and outbox", id: "chart-queue" }),
      chart(minutes.map((m) => ({ ...m, oldest_s: m.oldest_age_ms === null || m.oldest_age_ms === undefined ? m.oldest_age_ms : m.oldest_age_ms / 1000 })),
        [{ key: "oldest_s", label: "oldest entry", colour: "#e0781a" }], { title: "Oldest queue entry", unit: "s", id: "chart-age" }));
  }
  const box = h("section", { class: "card" }, h("h2", {}, "The last hour"),
    recorded ? null : h("p", { class: "muted" }, "Nothing recorded yet: the scheduler's leader records each minute after it ends (`conveyor scheduler`)."),
    h("div", { class: "charts" }, figures));
  colourDots(box);
  return box;
}

async function overviewPage() {
  const live = h("span", { class: "live off" }, "connecting");
  const tiles = h("div", { class: "tiles" });
  const fleet = h("div");
  const history = h("div");
  main.replaceChildren(
    h("div", { class: "head" }, h("h1", {}, "Overview"), live),
    h("section", { class: "card" }, h("h2", {}, "Jobs by status"), tiles),
    history,
    fleet,
  );
  async function refresh() {
    const [o, hist] = await Promise.all([api("/overview"), api("/overview/history?minutes=60").catch((e) => e)]);
    history.replaceChildren(hist instanceof Error ? h("section", { class: "card" }, h("h2", {}, "The last hour"),
      h("p", { class: "error" }, hist.message)) : charts(hist.minutes, o.admin));
    tiles.replaceChildren(...STATUSES.map((s) => h("a", { class: "tile", href: `#/jobs?status=${s}` },
      h("div", { class: "n", "data-status": s }, o.counts[s] ?? 0), h("div", { class: "l" }, s))));
    if (!o.admin) { fleet.replaceChildren(); return; }
    const q = o.queue;
    fleet.replaceChildren(
      h("section", { class: "card" }, h("h2", {}, "Queue"),
        q ? h("dl", { class: "facts" },
          h("dt", {}, "length"), h("dd", {}, q.length),
          h("dt", {}, "pending (delivered, not acked)"), h("dd", {}, q.pending),
          h("dt", {}, "oldest"), h("dd", {}, q.oldest_age_ms == null ? "—" : `${(q.oldest_age_ms / 1000).toFixed(1)} s`))
          : h("p", { class: "error" }, o.queue_error || "unknown")),
      h("section", { class: "card" }, h("h2", {}, "Processes"),
        h("p", { class: "muted" }, "scheduler leader: ", o.scheduler_leader || "none"),
        o.workers && o.workers.length ? h("div", { class: "scroll" }, h("table", {},
          h("thead", {}, h("tr", {}, ["name", "role", "slots in use", "last seen"].map((c) => h("th", {}, c)))),
          h("tbody", {}, o.workers.map((w) => h("tr", {}, h("td", { class: "mono" }, w.name), h("td", {}, w.role),
            h("td", {}, w.role === "worker" ? `${w.in_use} / ${w.slots}` : "—"), h("td", {}, ago(w.last_seen_at)))))))
          : h("p", { class: "muted" }, o.fleet_error || "no process is alive")));
  }
  await refresh();
  const again = debounce(() => refresh().catch(() => {}), 400);
  const close = stream("/events/stream", again, live);
  const timer = setInterval(again, 10000);
  leave = () => { close(); clearInterval(timer); };
}

// ------------------------------------------------------------------ jobs

function jobRow(j) {
  return h("tr", { "data-job": j.id },
    h("td", { class: "mono" }, h("a", { href: `#/jobs/${j.id}` }, shortId(j.id))),
    h("td", {}, j.kind), h("td", { "data-col": "status" }, badge(j.status)),
    h("td", { class: "hide-sm" }, j.tenant_id), h("td", { class: "hide-sm mono" }, j.file_id ? shortId(j.file_id) : ""),
    h("td", {}, `${j.attempts}/${j.max_attempts}`), h("td", { title: j.created_at }, ago(j.created_at)));
}

async function jobsPage(query) {
  const params = new URLSearchParams(query);
  const status = params.get("status") || "";
  const kind = params.get("kind") || "";
  const cursors = [null];
  const live = h("span", { class: "live off" }, "connecting");
  const body = h("tbody");
  const older = h("button", { type: "button" }, "Older →");
  const newer = h("button", { type: "button" }, "← Newer");
  const empty = h("p", { class: "muted", hidden: true }, "No jobs match.");
  const statusSel = h("select", { name: "status" }, h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
  const kindIn = h("input", { name: "kind", value: kind, placeholder: "e.g. cad.convert", size: 18 });
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    if (statusSel.value) p.set("status", statusSel.value);
    if (kindIn.value.trim()) p.set("kind", kindIn.value.trim());
    location.hash = `#/jobs${p.toString() ? `?${p}` : ""}`;
  } }, h("label", {}, "status", statusSel), h("label", {}, "kind", kindIn), h("button", { type: "submit" }, "Filter"));
  main.replaceChildren(
    h("div", { class: "head" }, h("h1", {}, "Jobs"), live),
    h("section", { class: "card" }, form,
      h("div", { class: "scroll" }, h("table", { id: "jobs" },
        h("thead", {}, h("tr", {}, ["job", "kind", "status", "tenant", "file", "attempts", "submitted"].map(
          (c, i) => h("th", { class: i === 3 || i === 4 ? "hide-sm" : null }, c)))), body)),
      empty, h("div", { class: "pager" }, newer, older)));

  let page = 0;
  let next = null;
  async function load() {
    const p = new URLSearchParams({ limit: "50" });
    if (status) p.set("status", status);
    if (kind) p.set("kind", kind);
    if (cursors[page]) p.set("cursor", cursors[page]);
    const got = await api(`/jobs?${p}`);
    next = got.next_cursor;
    body.replaceChildren(...got.items.map(jobRow));
    empty.hidden = got.items.length > 0;
    older.disabled = !next;
    newer.disabled = page === 0;
  }
  older.onclick = () => { cursors[page + 1] = next; page += 1; load().catch(show); };
  newer.onclick = () => { page = Math.max(0, page - 1); load().catch(show); };
  const show = (e) => main.append(failure(e));
  await load();

  const reloadFirst = debounce(() => { if (page === 0) load().catch(() => {}); }, 300);
  async function update(id) {
    const row = body.querySelector(`tr[data-job="${CSS.escape(id)}"]`);
    if (!row) return;
    const j = await api(`/jobs/${encodeURIComponent(id)}`);
    if (status && j.status !== status) { reloadFirst(); return; }
    const fresh = jobRow(j);
    fresh.classList.add("flash");
    row.replaceWith(fresh);
  }
  const close = stream("/events/stream", (ev) => {
    if (ev.action === "submitted" || ev.action === "retried") reloadFirst();
    else update(ev.job_id).catch(() => {});
  }, live);
  leave = close;
}

// ------------------------------------------------------------------ one job

const LANE_END = new Set(["succeeded", "job_failed", "retry_scheduled", "lease_lost", "stale_result", "cancelled",
  "released"]);

function timeline(job, events) {
  const t = events.map((e) => Date.parse(e.created_at));
  const start = Math.min(...t);
  const end = Math.max(...t, job.finished_at ? Date.parse(job.finished_at) : Date.now());
  const span = Math.max(end - start, 1);
  const attempts = [...new Set(events.map((e) => e.attempt_id))].sort((a, b) => a - b);
  const W = 900, left = 90, right = 20, laneH = 28, top = 10;
  const H = top + attempts.length * laneH + 26;
  const x = (ms) => left + ((ms - start) / span) * (W - left - right);
  const lane = (a) => top + attempts.indexOf(a) * laneH + laneH / 2;
  const g = svg("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "the job's events on a time axis, one lane per attempt" });
  for (const a of attempts) {
    g.append(svg("text", { x: 4, y: lane(a) + 4 }, a === 0 ? "job" : `attempt ${a}`));
    g.append(svg("line", { x1: left, x2: W - right, y1: lane(a), y2: lane(a), stroke: "#e3e6eb" }));
    const mine = events.filter((e) => e.attempt_id === a);
    const began = mine.find((e) => e.action === "claimed" || e.action === "reclaimed");
    if (began) {
      const ended = mine.find((e) => LANE_END.has(e.action));
      const x1 = x(Date.parse(began.created_at));
      const x2 = ended ? x(Date.parse(ended.created_at)) : x(Date.now());
      g.append(svg("rect", { x: x1, y: lane(a) - 6, width: Math.max(2, x2 - x1), height: 12, rx: 3,
        fill: ended ? "#dbe6f7" : "#bcd3f5" }));
    }
  }
  for (const e of events) {
    const c = svg("circle", { cx: x(Date.parse(e.created_at)), cy: lane(e.attempt_id), r: 5,
      fill: ACTION_COLOURS[e.action] || "#667085", "data-action": e.action });
    c.append(svg("title", {}, `${e.action} · ${when(e.created_at)}`));
    g.append(c);
  }
  const secs = span / 1000;
  g.append(svg("text", { x: left, y: H - 6 }, when(new Date(start).toISOString())));
  g.append(svg("text", { x: W - right, y: H - 6, "text-anchor": "end" },
    `+${secs < 10 ? secs.toFixed(2) : secs.toFixed(0)} s`));
  const seen = [...new Set(events.map((e) => e.action))];
  return h("div", {}, g, h("div", { class: "legend" },
    seen.map((a) => h("span", {}, h("i", { style: null, "data-colour": a }), a))));
}

function colourLegend(root) {
  // style attributes are not allowed by the page's policy: colour the legend's dots through the CSSOM
  for (const i of root.querySelectorAll("i[data-colour]")) i.style.background = ACTION_COLOURS[i.dataset.colour] || "#667085";
}

function json(value) { return h("pre", {}, value === null || value === undefined ? "—" : JSON.stringify(value, null, 2)); }

async function jobPage(id) {
  const live = h("span", { class: "live off" }, "connecting");
  const box = h("div");
  main.replaceChildren(box);
  async function render() {
    const j = await api(`/jobs/${encodeURIComponent(id)}`);
    const act = (verb) => async (e) => {
      e.target.disabled = true;
      try { await api(`/jobs/${encodeURIComponent(id)}/${verb}`, { method: "POST" }); await render(); }
      catch (err) { box.prepend(failure(err)); e.target.disabled = false; }
    };
    const actions = h("div", { class: "actions" },
      j.status === "queued" || j.status === "running"
        ? h("button", { type: "button", class: "danger", id: "cancel", onclick: act("cancel") }, "Cancel") : null,
      j.status === "failed" || j.status === "cancelled"
        ? h("button", { type: "button", class: "primary", id: "retry", onclick: act("retry") }, "Retry") : null);
    const d = j.diagnostics;
    const tl = j.events.length ? timeline(j, j.events) : h("p", { class: "muted" }, "no events yet");
    box.replaceChildren(...[
      h("div", { class: "head" }, h("h1", {}, j.kind), badge(j.status), h("span", { class: "mono muted" }, j.id), live,
        actions),
      d ? h("section", { class: "card", id: "diagnosis" }, h("h2", {}, "Why"),
        h("p", {}, d.cause_code ? h("code", {}, d.cause_code) : null, " ", d.cause || ""),
        d.next_step ? h("p", {}, h("strong", {}, "Next step: "), d.next_step) : null) : null,
      h("section", { class: "card" }, h("h2", {}, "Timeline"), tl),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Facts"), h("dl", { class: "facts" },
          ["tenant_id", "org_id", "priority", "attempts", "max_attempts", "attempt_id", "created_at", "started_at",
            "finished_at", "file_id", "trace_id", "error_code"].flatMap((k) => [h("dt", {}, k.replace(/_/g, " ")),
            h("dd", {}, k.endsWith("_at") ? when(j[k]) : j[k] ?? "—")]))),
        h("section", { class: "card" }, h("h2", {}, "Errors"), j.error_history && j.error_history.length
          ? h("ol", {}, j.error_history.map((e) => h("li", {}, h("code", {}, e.code || "?"), ` attempt ${e.attempt}: `,
            e.message || ""))) : h("p", { class: "muted" }, "none"))),
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Payload"), json(j.payload)),
        h("section", { class: "card" }, h("h2", {}, "Result"), json(j.result))),
      h("section", { class: "card" }, h("h2", {}, "Events"), h("div", { class: "scroll" }, h("table", { id: "events" },
        h("thead", {}, h("tr", {}, ["#", "attempt", "action", "at", "details"].map((c) => h("th", {}, c)))),
        h("tbody", {}, j.events.map((e) => h("tr", { "data-action": e.action }, h("td", {}, e.id), h("td", {}, e.attempt_id),
          h("td", {}, e.action), h("td", {}, when(e.created_at)),
          h("td", { class: "mono" }, Object.keys(e.payload || {}).length ? JSON.stringify(e.payload) : ""))))))),
    ].filter(Boolean));
    colourLegend(box);
    return j;
  }
  let j;
  try { j = await render(); } catch (err) {
    if (err.status === 404) { box.replaceChildren(failure(new Error("No such job (or it is not yours to see)."))); return; }
    throw err;
  }
  const again = debounce(() => render().catch(() => {}), 150);
  leave = stream(`/jobs/${encodeURIComponent(j.id)}/events/stream`, again, live, again);
}

// ------------------------------------------------------------------ routing

// Pages plugins add (the conveyor_ui_pages hook): each is a module whose render({ main, path, query })
// draws into main and may return a function that closes what it opened.
let pages = null;

async function pluginPages() {
  if (pages === null) {
    pages = await (await fetch("/ui/pages", { credentials: "same-origin" })).json();
    document.getElementById("nav").append(...pages.map((p) => h("a", { href: `#/p/${p.name}`, "data-page": `p/${p.name}` },
      p.title)));
  }
  return pages;
}

async function pluginPage(name, rest, query) {
  const page = (await pluginPages()).find((p) => p.name === name);
  if (!page) { main.replaceChildren(failure(new Error(`No page ${name} (is its plugin installed?)`))); return; }
  const mod = await import(page.script);
  const close = await mod.render({ main, path: rest || "", query: query || "" });
  leave = typeof close === "function" ? close : null;
}

async function route() {
  if (leave) { leave(); leave = null; }
  const session = await (await fetch("/ui/session", { credentials: "same-origin" })).json();
  if (!session.signed_in) { showSignin(session.reason); return; }
  showWho(session);
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  try {
    await pluginPages();
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", path === "/" ? a.dataset.page === "overview" : path.startsWith(`/${a.dataset.page}`));
    }
    const job = path.match(/^\/jobs\/([^/]+)$/);
    const plugin = path.match(/^\/p\/([a-z0-9-]+)(?:\/(.*))?$/);
    if (job) await jobPage(decodeURIComponent(job[1]));
    else if (path === "/jobs") await jobsPage(query || "");
    else if (plugin) await pluginPage(plugin[1], plugin[2], query);
    else await overviewPage();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) { showSignin(err.message); return; }
    main.replaceChildren(failure(err));
  }
}

document.getElementById("signout").addEventListener("click", () => { signOut(); });
window.addEventListener("hashchange", route);
route();
