// What every dashboard page uses, the core's and the plugins' (`import { h, api } from "/ui/static/kit.js"`).
// Values from the API are put into the page as text (never as HTML); requests go to this origin with the
// session cookie, and a change carries the X-Conveyor-UI header the API asks of cookie-signed requests.

export const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];

export function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

export function svg(tag, attrs = {}, ...kids) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

export function badge(status) { return h("span", { class: `badge ${status}` }, status); }

export function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function when(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }

export function shortId(id) { return id.slice(0, 8); }

export function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { "X-Conveyor-UI": "1", Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`/api/v1${path}`, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = (r.headers.get("content-type") || "").includes("json") ? await r.json() : null;
  if (r.status === 401) throw new ApiError(401, data?.error?.message || "sign in", "unauthorized");
  if (!r.ok) throw new ApiError(r.status, data?.error?.message || r.statusText, data?.error?.code);
  return data;
}

// A live stream of events; says on the page whether it is connected.
export function stream(path, onEvent, indicator, onEnd) {
  const es = new EventSource(`/api/v1${path}`, { withCredentials: true });
  es.onopen = () => { if (indicator) { indicator.textContent = "live"; indicator.classList.remove("off"); } };
  es.onerror = () => { if (indicator) { indicator.textContent = "reconnecting"; indicator.classList.add("off"); } };
  es.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (e) { console.warn("bad event", e); } };
  es.addEventListener("end", () => { es.close(); if (indicator) indicator.textContent = "final"; if (onEnd) onEnd(); });
  return () => es.close();
}

export function failure(err) {
  return h("section", { class: "card" }, h("h1", {}, "Something went wrong"),
    h("p", { class: "error" }, err.message || String(err)));
}
