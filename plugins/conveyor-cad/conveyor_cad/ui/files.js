// The CAD plugin's Files page: upload by drag and drop, conversion status live, the preview, the GLB in a
// 3D view (three.js, viewer3d.js beside this file) and the file's metadata.

import { api, ago, badge, debounce, failure, h, stream, when } from "/ui/static/kit.js";

const STATUS_BADGE = { pending: "queued", processing: "running", done: "succeeded", partial: "cancelled",
  failed: "failed", unsupported: "failed" };

function statusBadge(status) {
  const b = badge(STATUS_BADGE[status] || "queued");
  b.textContent = status || "unknown";
  b.dataset.status = status || "";
  return b;
}

function size(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// XMLHttpRequest, not fetch: it reports upload progress
function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/files");
    xhr.setRequestHeader("X-Conveyor-UI", "1");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) resolve(body);
      else reject(new Error(body?.error?.message || `upload failed (${xhr.status})`));
    };
    xhr.onerror = () => reject(new Error("upload failed: the connection broke"));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

function dropZone(onUploaded) {
  const input = h("input", { type: "file", id: "file-input", hidden: true });
  const bar = h("progress", { max: 1, value: 0, hidden: true, id: "upload-progress" });
  const note = h("p", { class: "muted", id: "upload-note" }, "Drop a CAD file here (STEP, STL, OBJ, DXF, …) or ",
    h("button", { type: "button", class: "link-dark", onclick: () => input.click() }, "choose one"), ".");
  const zone = h("section", { class: "card dropzone", id: "dropzone" }, note, bar, input);
  async function send(file) {
    bar.hidden = false;
    bar.value = 0;
    note.textContent = `Uploading ${file.name} …`;
    try {
      const rec = await upload(file, (f) => { bar.value = f; });
      note.textContent = `Uploaded ${file.name}; converting.`;
      onUploaded(rec);
    } catch (err) {
      note.replaceChildren(h("span", { class: "error" }, err.message));
    } finally {
      bar.hidden = true;
    }
  }
  input.addEventListener("change", () => { if (input.files.length) send(input.files[0]); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
  return zone;
}

async function listPage(main) {
  const live = h("span", { class: "live off" }, "connecting");
  const body = h("tbody");
  const empty = h("p", { class: "muted", hidden: true }, "No files yet.");
  async function load() {
    const files = await api("/files?limit=100");
    body.replaceChildren(...files.map((f) => h("tr", { "data-file": f.id },
      h("td", {}, h("a", { href: `#/p/files/${f.id}` }, f.filename)), h("td", {}, f.cad_format || "?"),
      h("td", {}, statusBadge(f.conversion_status)), h("td", { class: "hide-sm" }, size(f.size)),
      h("td", { title: f.created_at }, ago(f.created_at)))));
    empty.hidden = files.length > 0;
  }
  main.replaceChildren(
    h("div", { class: "head" }, h("h1", {}, "Files"), live),
    dropZone((rec) => { location.hash = `#/p/files/${rec.id}`; }),
    h("section", { class: "card" }, h("div", { class: "scroll" }, h("table", { id: "files" },
      h("thead", {}, h("tr", {}, ["file", "format", "conversion", "size", "uploaded"].map(
        (c, i) => h("th", { class: i === 3 ? "hide-sm" : null }, c)))), body)), empty));
  await load();
  const again = debounce(() => load().catch(() => {}), 300);
  return stream("/events/stream", (ev) => { if (ev.file_id || ev.action === "submitted") again(); }, live);
}

async function view3d(box, url) {
  const THREE = await import("./viewer3d.js");
  const width = box.clientWidth || 600;
  const height = Math.round(Math.min(480, Math.max(260, width * 0.6)));
  const renderer = new THREE.WebGLRenderer({ antialias: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  renderer.setSize(width, height);
  renderer.outputColorSpace = THREE.SRGBColorSpace;
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xf1f3f6);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x8a94a6, 2.2));
  const sun = new THREE.DirectionalLight(0xffffff, 1.6);
  sun.position.set(1, 2, 3);
  scene.add(sun);
  const camera = new THREE.PerspectiveCamera(45, width / height, 0.001, 1e7);
  const controls = new THREE.OrbitControls(camera, renderer.domElement);
  const gltf = await new THREE.GLTFLoader().loadAsync(url);
  scene.add(gltf.scene);
  const bounds = new THREE.Box3().setFromObject(gltf.scene);
  function fit() {
    const centre = bounds.getCenter(new THREE.Vector3());
    const radius = bounds.getSize(new THREE.Vector3()).length() / 2 || 1;
    const distance = radius / Math.sin((camera.fov * Math.PI) / 360);
    camera.position.copy(centre).add(new THREE.Vector3(1, 0.8, 1.2).normalize().multiplyScalar(distance));
    camera.near = distance / 100;
    camera.far = distance * 100;
    camera.updateProjectionMatrix();
    controls.target.copy(centre);
    controls.update();
  }
  fit();
  let running = true;
  renderer.setAnimationLoop(() => { if (running) { controls.update(); renderer.render(scene, camera); } });
  renderer.domElement.id = "viewer";
  renderer.domElement.setAttribute("aria-label", "the converted geometry: drag to rotate, scroll to zoom");
  box.replaceChildren(renderer.domElement,
    h("div", { class: "viewer-tools" }, h("button", { type: "button", id: "fit", onclick: fit }, "Fit"),
      h("span", { class: "muted" }, "drag to rotate · scroll to zoom · right-drag to pan")));
  return () => { running = false; renderer.setAnimationLoop(null); controls.dispose(); renderer.dispose(); };
}

function facts(attrs) {
  const shown = [];
  const fmt = (v) => (Array.isArray(v) ? v.map((x) => (typeof x === "number" ? +x.toFixed(3) : x)).join(" × ")
    : typeof v === "number" ? String(+v.toFixed(3))
      : typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "bbox" && v && v.min && v.max) {
      shown.push(["bbox min", fmt(v.min)], ["bbox max", fmt(v.max)]);
      if (v.size) shown.push(["size", fmt(v.size)]);
    } else shown.push([k.replace(/_/g, " "), fmt(v)]);
  }
  return shown.length ? h("dl", { class: "facts", id: "metadata" }, shown.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))
    : h("p", { class: "muted" }, "none yet");
}

async function filePage(main, id) {
  const live = h("span", { class: "live off" }, "connecting");
  const box = h("div");
  main.replaceChildren(box);
  // the 3D view lives across re-renders: a status change must not reload the model
  const viewer = h("div", { class: "viewer", id: "viewer-box" }, h("p", { class: "muted" }, "no geometry yet"));
  let closeViewer = null;
  let closeStream = null;
  let shownGeometry = null;
  async function render() {
    const f = await api(`/file/${encodeURIComponent(id)}`);
    const err = f.conversion_error;
    box.replaceChildren(...[
      h("div", { class: "head" }, h("h1", {}, f.filename), statusBadge(f.conversion_status),
        h("span", { class: "mono muted" }, f.id), live,
        f.job_id ? h("a", { href: `#/jobs/${f.job_id}`, class: "actions" }, "conversion job →") : null),
      err ? h("section", { class: "card" }, h("h2", {}, "Conversion error"),
        h("p", { class: "error" }, h("code", {}, err.code || "?"), " ", err.message || "")) : null,
      h("div", { class: "grid2" },
        h("section", { class: "card" }, h("h2", {}, "Preview"), f.preview_url
          ? h("img", { src: f.preview_url, alt: `preview of ${f.filename}`, id: "preview", class: "preview" })
          : h("p", { class: "muted" }, "no preview yet")),
        h("section", { class: "card" }, h("h2", {}, "Metadata"), h("dl", { class: "facts" },
          h("dt", {}, "format"), h("dd", {}, f.cad_format || "?"), h("dt", {}, "size"), h("dd", {}, size(f.size)),
          h("dt", {}, "sha256"), h("dd", { class: "mono" }, (f.sha256 || "").slice(0, 16)),
          h("dt", {}, "uploaded"), h("dd", {}, when(f.created_at))), facts(f.attributes))),
      h("section", { class: "card" }, h("h2", {}, "3D view"), viewer)].filter(Boolean));
    if (f.geometry_url && f.geometry_url !== shownGeometry) {
      if (closeViewer) closeViewer();
      shownGeometry = f.geometry_url;
      viewer.replaceChildren(h("p", { class: "muted" }, "loading the 3D view …"));
      closeViewer = await view3d(viewer, f.geometry_url).catch((e) => {
        viewer.replaceChildren(failure(e));
        return null;
      });
    }
    return f;
  }
  let f;
  try { f = await render(); } catch (err) {
    if (err.status === 404) { box.replaceChildren(failure(new Error("No such file (or it is not yours to see)."))); return null; }
    throw err;
  }
  if (f.job_id && !["done", "failed", "unsupported", "partial"].includes(f.conversion_status)) {
    const again = debounce(() => render().catch(() => {}), 200);
    closeStream = stream(`/jobs/${encodeURIComponent(f.job_id)}/events/stream`, again, live, again);
  } else {
    live.textContent = "final";
  }
  return () => { if (closeStream) closeStream(); if (closeViewer) closeViewer(); };
}

function styles() {
  if (!document.getElementById("files-css")) {
    document.head.append(h("link", { rel: "stylesheet", href: "/ui/plugin/files/files.css", id: "files-css" }));
  }
}

export async function render({ main, path }) {
  styles();
  const id = path.split("/")[0];
  return id ? filePage(main, decodeURIComponent(id)) : listPage(main);
}
