// The judge plugin's Problems page: the problem list, a problem with its samples and a submit form (a file or
// pasted code; the language picked, or inferred from the file's extension), a submission's verdict live with a
// per-test table (time and memory against the limits), the compiler's output, and a scoreboard by verdict.

import { api, ago, debounce, failure, h, stream, when } from "/ui/static/kit.js";

const GOOD = new Set(["accepted"]);
const SHORT = { accepted: "AC", wrong_answer: "WA", presentation_error: "PE", time_limit_exceeded: "TLE",
  memory_limit_exceeded: "MLE", output_limit_exceeded: "OLE", runtime_error: "RE", compile_error: "CE",
  system_error: "SE" };

function verdictBadge(verdict, status) {
  const text = verdict ? (SHORT[verdict] || verdict) : status;
  const cls = verdict ? (GOOD.has(verdict) ? "succeeded" : "failed") : status === "running" ? "running" : "queued";
  return h("span", { class: `badge ${cls}`, "data-verdict": verdict || "", title: verdict || status }, text);
}

function bar(value, limit, unit) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  const share = limit ? Math.min(1, value / limit) : 0;
  return h("span", { class: "bar", title: limit ? `${value} of ${limit} ${unit}` : `${value} ${unit}` },
    h("meter", { min: 0, max: 1, value: share, low: 0.7, high: 0.9, optimum: 0 }), ` ${value} ${unit}`);
}

function styles() {
  if (!document.getElementById("problems-css")) {
    document.head.append(h("link", { rel: "stylesheet", href: "/ui/plugin/problems/problems.css", id: "problems-css" }));
  }
}

async function mySubmissions(limit = 200) {
  const got = await api(`/jobs?kind=judge.submission&limit=${limit}`);
  return got.items;
}

function scoreboard(subs) {
  const counts = {};
  for (const s of subs) {
    const v = s.status === "succeeded" && s.result && s.result.verdict ? s.result.verdict : s.status;
    counts[v] = (counts[v] || 0) + 1;
  }
  const order = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  return h("div", { class: "tiles", id: "scoreboard" }, order.length ? order.map(([v, n]) => h("div", { class: "tile" },
    h("div", { class: "n", "data-verdict": v }, n), h("div", { class: "l" }, SHORT[v] ? `${SHORT[v]} · ${v.replace(/_/g, " ")}` : v)))
    : h("p", { class: "muted" }, "no submissions yet"));
}

function submissionRows(subs, problems) {
  return subs.map((s) => h("tr", { "data-job": s.id },
    h("td", {}, h("a", { href: `#/p/problems/s/${s.id}` }, s.id.slice(0, 8))),
    h("td", {}, problems[s.payload?.problem_id] || s.payload?.problem_id || "?"),
    h("td", {}, s.payload?.language || "?"),
    h("td", {}, verdictBadge(s.status === "succeeded" ? s.result?.verdict : null, s.status)),
    h("td", { title: s.created_at }, ago(s.created_at))));
}

async function listPage(main) {
  const live = h("span", { class: "live off" }, "connecting");
  const problems = await api("/problems?limit=500");
  const titles = Object.fromEntries(problems.items.map((p) => [p.id, p.title || p.id]));
  const board = h("div");
  const body = h("tbody");
  async function loadSubs() {
    const subs = await mySubmissions();
    board.replaceChildren(scoreboard(subs));
    body.replaceChildren(...submissionRows(subs.slice(0, 20), titles));
  }
  main.replaceChildren(
    h("div", { class: "head" }, h("h1", {}, "Problems"), live),
    h("section", { class: "card" }, problems.items.length ? h("div", { class: "scroll" }, h("table", { id: "problems" },
      h("thead", {}, h("tr", {}, ["problem", "tests", "layout", "added"].map((c) => h("th", {}, c)))),
      h("tbody", {}, problems.items.map((p) => h("tr", { "data-problem": p.id },
        h("td", {}, h("a", { href: `#/p/problems/${p.id}` }, p.title || p.id)), h("td", {}, p.tests),
        h("td", {}, p.format), h("td", {}, ago(p.added_at)))))))
      : h("p", { class: "muted" }, "No problems yet: an admin adds one with POST /api/v1/problems.")),
    h("section", { class: "card" }, h("h2", {}, "Your submissions by verdict"), board),
    h("section", { class: "card" }, h("h2", {}, "Your latest submissions"), h("div", { class: "scroll" },
      h("table", { id: "submissions" }, h("thead", {}, h("tr", {}, ["submission", "problem", "language", "verdict",
        "submitted"].map((c) => h("th", {}, c)))), body))));
  await loadSubs();
  const again = debounce(() => loadSubs().catch(() => {}), 400);
  return stream("/events/stream", again, live);
}

function guessLanguage(languages, filename) {
  const dot = filename.lastIndexOf(".");
  if (dot < 0) return null;
  const ext = filename.slice(dot).toLowerCase();
  const found = languages.find((l) => l.extensions.some((e) => e.toLowerCase() === ext || `.${e.toLowerCase()}` === ext));
  return found ? found.id : null;
}

async function problemPage(main, id) {
  const [p, langs] = await Promise.all([api(`/problems/${encodeURIComponent(id)}`), api("/languages")]);
  const languages = langs.items;
  const select = h("select", { name: "language", id: "language" },
    languages.map((l) => h("option", { value: l.id }, `${l.name} (${l.id})`)));
  const code = h("textarea", { name: "code", id: "code", rows: 14, spellcheck: "false",
    placeholder: "Paste your program, or choose a file" });
  const file = h("input", { type: "file", id: "source-file" });
  const note = h("p", { class: "muted", id: "submit-note" });
  file.addEventListener("change", async () => {
    const f = file.files[0];
    if (!f) return;
    code.value = await f.text();
    const guess = guessLanguage(languages, f.name);
    if (guess) { select.value = guess; note.textContent = `${f.name}: ${guess}, from its extension`; }
    else note.textContent = `${f.name}: pick its language`;
  });
  const form = h("form", { id: "submit-form", onsubmit: async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const got = await api("/submit", { method: "POST", body: { problem_id: p.id, language: select.value, code: code.value } });
      location.hash = `#/p/problems/s/${got.job_id}`;
    } catch (err) {
      note.replaceChildren(h("span", { class: "error" }, err.message));
      button.disabled = false;
    }
  } }, h("div", { class: "filters" }, h("label", {}, "language", select), h("label", {}, "file", file)), code,
  h("div", { class: "pager" }, h("button", { type: "submit", class: "primary" }, "Submit")));
  main.replaceChildren(
    h("div", { class: "head" }, h("h1", {}, p.title || p.id), h("span", { class: "mono muted" }, p.id)),
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", {}, "Limits"), h("dl", { class: "facts" },
        h("dt", {}, "time"), h("dd", {}, `${p.time_limit} ms per test`), h("dt", {}, "memory"), h("dd", {}, `${p.memory_limit} MiB`),
        h("dt", {}, "tests"), h("dd", {}, p.tests), h("dt", {}, "you see"), h("dd", {}, p.feedback.replace(/_/g, " ")),
        h("dt", {}, "max score"), h("dd", {}, p.max_score))),
      h("section", { class: "card" }, h("h2", {}, "Submit"), form, note)),
    p.samples.length ? h("section", { class: "card" }, h("h2", {}, "Samples"), p.samples.map((s) => h("div", { class: "grid2 sample" },
      h("div", {}, h("h3", {}, `${s.name}: input`), h("pre", {}, s.input)),
      h("div", {}, h("h3", {}, "expected output"), h("pre", {}, s.output ?? "—"))))) : h("span"));
}

async function submissionPage(main, id) {
  const live = h("span", { class: "live off" }, "connecting");
  const box = h("div");
  main.replaceChildren(box);
  async function render() {
    const s = await api(`/status/${encodeURIComponent(id)}`);
    const tests = s.tests || [];
    const compileOut = s.compile && (s.compile.output || s.compile.message);
    box.replaceChildren(...[
      h("div", { class: "head" }, h("h1", {}, "Submission"), verdictBadge(s.verdict, s.status),
        h("span", { class: "muted", id: "verdict-label" }, s.verdict_label || s.status), live,
        h("a", { href: `#/jobs/${s.job_id}`, class: "actions" }, "job →")),
      h("section", { class: "card" }, h("dl", { class: "facts" },
        h("dt", {}, "problem"), h("dd", {}, h("a", { href: `#/p/problems/${s.problem_id}` }, s.problem_id || "?")),
        h("dt", {}, "language"), h("dd", {}, s.language || "?"),
        h("dt", {}, "score"), h("dd", {}, s.score === undefined || s.score === null ? "—" : `${s.score} / ${s.max_score}`),
        h("dt", {}, "tests"), h("dd", {}, s.tests_total ? `${s.tests_run} run of ${s.tests_total}` : "—"),
        h("dt", {}, "submitted"), h("dd", {}, when(s.created_at)),
        h("dt", {}, "message"), h("dd", {}, s.message || (s.error ? s.error.message : "—")))),
      compileOut ? h("section", { class: "card" }, h("h2", {}, s.compile.ok ? "Compiler output" : "Compile error"),
        h("pre", { id: "compile-output" }, compileOut)) : null,
      tests.length ? h("section", { class: "card" }, h("h2", {}, "Tests"), h("div", { class: "scroll" }, h("table", { id: "tests" },
        h("thead", {}, h("tr", {}, ["test", "verdict", "time", "memory", "message"].map((c) => h("th", {}, c)))),
        h("tbody", {}, tests.map((t) => h("tr", { "data-test": t.name },
          h("td", {}, t.name), h("td", {}, verdictBadge(t.verdict, "")),
          h("td", {}, bar(t.time_ms, s.time_limit, "ms")),
          h("td", {}, bar(t.memory_kib === undefined ? undefined : Math.round(t.memory_kib / 1024 * 10) / 10,
            s.memory_limit, "MiB")),
          h("td", {}, t.message || "")))))),
      s.feedback === "verdict" ? h("p", { class: "muted" }, "This problem shows verdicts only: no times or memory.") : null)
        : null,
    ].filter(Boolean));
    return s;
  }
  const s = await render();
  if (s.finished) { live.textContent = "final"; return null; }
  const again = debounce(() => render().catch(() => {}), 150);
  return stream(`/jobs/${encodeURIComponent(id)}/events/stream`, again, live, again);
}

export async function render({ main, path }) {
  styles();
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "s" && parts[1]) return submissionPage(main, decodeURIComponent(parts[1]));
  if (parts[0]) return problemPage(main, decodeURIComponent(parts[0]));
  return listPage(main);
}
