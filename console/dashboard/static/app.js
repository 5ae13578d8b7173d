/* KeyTrail dashboard: a small hash-routed page over the console API. No build step. */
"use strict";

const TOKEN_KEY = "keytrail.token";
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const DAY = 86400000;
let chart = null;

// ------------------------------------------------------------------ API
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) { signOut(data.error?.message); throw new Error(data.error?.message || "sign in again"); }
  if (!res.ok) throw new Error(data.error?.message || `HTTP ${res.status}`);
  return data;
}

// ------------------------------------------------------------------ formatting
function ago(iso) {
  if (!iso) return "-";
  const ms = Date.now() - new Date(iso).getTime();
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "-");
const day = (iso) => (iso ? new Date(iso).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" }) : "-");
function expiry(k) {
  if (k.status === "revoked") return `<span class="pill grey" data-expiry="revoked">—</span>`;
  if (!k.expires_at) return `<span class="pill blue" title="never expires" data-expiry="never">∞ never</span>`;
  const left = new Date(k.expires_at).getTime() - Date.now();
  if (k.status === "expired" || left <= 0) return `<span class="pill red" data-expiry="expired" title="${esc(when(k.expires_at))}">expired</span>`;
  const days = Math.ceil(left / DAY);
  const cls = days <= 7 ? "yellow" : "green";
  return `<span class="pill ${cls}" data-expiry="${cls}" title="${esc(when(k.expires_at))}">in ${days} d</span>`;
}
function status(s) {
  const cls = { active: "green", disabled: "grey", revoked: "red", expired: "red" }[s] || "grey";
  return `<span class="pill ${cls}" data-status="${esc(s)}">${esc(s)}</span>`;
}
const severityPill = (s) => `<span class="pill ${{ critical: "red", high: "red", medium: "yellow", low: "blue", info: "grey" }[s] || "grey"}">${esc(s)}</span>`;
function toast(text, bad = false) {
  const t = $("#toast");
  t.textContent = text; t.className = bad ? "toast bad" : "toast"; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 3500);
}

// ------------------------------------------------------------------ sign in
function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("#login-error").textContent = message || "";
  if (!$("#login").open) $("#login").showModal();
}
$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#login-key").value.trim());
  try {
    await api("/v1/keys?limit=1");
    $("#login").close(); $("#login-key").value = ""; route();
  } catch (e) { $("#login-error").textContent = e.message; sessionStorage.removeItem(TOKEN_KEY); }
});
$("#signout").addEventListener("click", () => { signOut(); $("#main").innerHTML = ""; });

// ------------------------------------------------------------------ dialogs
function confirmAction(title, text, okLabel = "Confirm") {
  return new Promise((resolve) => {
    const d = $("#confirm");
    $("#confirm-title").textContent = title; $("#confirm-text").textContent = text; $("#confirm-ok").textContent = okLabel;
    const done = (v) => { d.close(); $("#confirm-ok").onclick = null; $("#confirm-cancel").onclick = null; resolve(v); };
    $("#confirm-ok").onclick = () => done(true);
    $("#confirm-cancel").onclick = () => done(false);
    d.showModal();
  });
}
function showSecret(title, secret, record) {
  $("#secret-title").textContent = title;
  $("#secret-value").textContent = secret;
  $("#secret-meta").textContent = `${record.name} · ${record.id} · project ${record.project_id}`;
  $("#secret-copy").textContent = "Copy";
  $("#secret").showModal();
}
$("#secret-copy").addEventListener("click", async () => {
  const text = $("#secret-value").textContent;
  try { await navigator.clipboard.writeText(text); } catch (_) {
    const r = document.createRange(); r.selectNodeContents($("#secret-value"));
    getSelection().removeAllRanges(); getSelection().addRange(r); document.execCommand("copy");
  }
  $("#secret-copy").textContent = "Copied ✓";
});
$("#secret-done").addEventListener("click", () => { $("#secret-value").textContent = ""; $("#secret").close(); route(); });
$("#secret").addEventListener("cancel", () => { $("#secret-value").textContent = ""; setTimeout(route); });
document.querySelectorAll("[data-close]").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));

$("#create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const scopes = [...f.getAll("scope"), ...String(f.get("extra_scopes") || "").split(",").map((s) => s.trim()).filter(Boolean)];
  try {
    const res = await api("/v1/keys", { method: "POST", body: {
      name: f.get("name"), project_id: f.get("project_id"), owner: f.get("owner") || "", scopes, expires_in: f.get("expires_in"),
    } });
    $("#create").close(); ev.target.reset(); $("#create-error").textContent = "";
    showSecret("Your new key", res.secret, res.key);
  } catch (e) { $("#create-error").textContent = e.message; }
});

async function lifecycle(action, k) {
  const texts = {
    rotate: ["Rotate key?", `A new key replaces “${k.name}”. The old one keeps working for 24 h, then stops.`, "Rotate"],
    renew: ["Renew key?", `Extend “${k.name}” by 30 days from its current expiry (or from now if it has expired).`, "Renew +30 d"],
    revoke: ["Revoke key?", `“${k.name}” (${k.masked_key}) stops working immediately. This cannot be undone.`, "Revoke"],
    disable: ["Disable key?", `“${k.name}” stops working until it is enabled again.`, "Disable"],
    enable: ["Enable key?", `“${k.name}” works again.`, "Enable"],
  };
  const [title, text, ok] = texts[action];
  if (!(await confirmAction(title, text, ok))) return;
  try {
    const res = await api(`/v1/keys/${encodeURIComponent(k.id)}/${action}`, { method: "POST", body: {} });
    if (action === "rotate") showSecret("Rotated: your new key", res.secret, res.key);
    else { toast(`${k.name}: ${res.status}`); route(); }
  } catch (e) { toast(e.message, true); }
}

// ------------------------------------------------------------------ pages
const filters = { project: "", status: "", idle: "", expiring: false, never: false };

function keyActions(k) {
  const live = k.status !== "revoked";
  return `<button class="small" data-act="rotate" ${live && !k.grace_until ? "" : "disabled"}>Rotate</button>
    <button class="small" data-act="renew" ${live ? "" : "disabled"}>Renew</button>
    <button class="small danger" data-act="revoke" ${live ? "" : "disabled"}>Revoke</button>`;
}

async function keysPage() {
  const main = $("#main");
  main.innerHTML = `
    <div class="page-head"><div><h1>API keys</h1><div class="muted">Who holds which key, when it was last used, and when it expires.</div></div>
      <button class="primary" id="new-key">+ Create key</button></div>
    <div class="cards" id="cards"></div>
    <div class="panel">
      <div class="filters">
        <input id="f-project" placeholder="Project" value="${esc(filters.project)}">
        <select id="f-status"><option value="">Any status</option>${["active", "disabled", "revoked", "expired"].map((s) => `<option ${filters.status === s ? "selected" : ""}>${s}</option>`).join("")}</select>
        <label class="check">Idle &gt; <input id="f-idle" type="number" min="0" value="${esc(filters.idle)}"> days</label>
        <label class="check"><input type="checkbox" id="f-expiring" ${filters.expiring ? "checked" : ""}> Expiring ≤ 7 d</label>
        <label class="check"><input type="checkbox" id="f-never" ${filters.never ? "checked" : ""}> Never used</label>
      </div>
      <table data-testid="keys-table"><thead><tr><th>Name / ID</th><th>Key</th><th>Project / owner</th><th>Status</th><th>Created</th><th>Last used</th><th>Expires</th><th></th></tr></thead>
      <tbody id="rows"><tr><td colspan="8" class="empty">Loading…</td></tr></tbody></table>
    </div>`;
  $("#new-key").onclick = () => $("#create").showModal();
  const reload = () => {
    filters.project = $("#f-project").value.trim(); filters.status = $("#f-status").value; filters.idle = $("#f-idle").value;
    filters.expiring = $("#f-expiring").checked; filters.never = $("#f-never").checked; loadKeys();
  };
  ["#f-status", "#f-expiring", "#f-never"].forEach((s) => $(s).addEventListener("change", reload));
  ["#f-project", "#f-idle"].forEach((s) => $(s).addEventListener("input", () => { clearTimeout(reload.t); reload.t = setTimeout(reload, 300); }));
  await Promise.all([loadKeys(), loadCards()]);
}

async function loadCards() {
  const all = (await api("/v1/keys?limit=10000")).keys;
  const soon = all.filter((k) => k.status === "active" && k.expires_at && new Date(k.expires_at) - Date.now() <= 7 * DAY).length;
  const cards = [
    ["Keys", all.length, ""], ["Active", all.filter((k) => k.status === "active").length, "green"],
    ["Expiring ≤ 7 days", soon, soon ? "yellow" : ""], ["Never used", all.filter((k) => !k.last_used_at && k.status === "active").length, "blue"],
  ];
  $("#cards").innerHTML = cards.map(([l, v, c]) => `<div class="card ${c}"><div class="label">${l}</div><div class="value">${v}</div></div>`).join("");
}

async function loadKeys() {
  const q = new URLSearchParams({ limit: "1000" });
  if (filters.project) q.set("project", filters.project);
  if (filters.status) q.set("status", filters.status);
  if (filters.idle !== "" && Number(filters.idle) >= 0) q.set("idle_days", String(Number(filters.idle)));
  if (filters.expiring) q.set("expiring_days", "7");
  if (filters.never) q.set("never_used", "true");
  const tbody = $("#rows");
  let keys;
  try { keys = (await api(`/v1/keys?${q}`)).keys; } catch (e) { tbody.innerHTML = `<tr><td colspan="8" class="empty">${esc(e.message)}</td></tr>`; return; }
  if (!keys.length) { tbody.innerHTML = `<tr><td colspan="8" class="empty">No keys match. Create one with “+ Create key”.</td></tr>`; return; }
  tbody.innerHTML = keys.map((k) => `
    <tr data-key-id="${esc(k.id)}">
      <td><a href="#/keys/${encodeURIComponent(k.id)}"><b>${esc(k.name)}</b></a><div class="mono muted small" data-testid="key-id">${esc(k.id)}</div></td>
      <td class="mono">${esc(k.masked_key)}</td>
      <td>${esc(k.project_id)}${k.owner ? `<div class="muted small">${esc(k.owner)}</div>` : ""}</td>
      <td>${status(k.status)}</td>
      <td class="nowrap" title="${esc(when(k.created_at))}">${esc(day(k.created_at))}</td>
      <td class="nowrap" data-testid="last-used" title="${esc(when(k.last_used_at))}${k.last_used_ip ? " from " + esc(k.last_used_ip) : ""}">${esc(ago(k.last_used_at))}</td>
      <td>${expiry(k)}</td>
      <td class="actions">${keyActions(k)}</td>
    </tr>`).join("");
  tbody.querySelectorAll("tr[data-key-id]").forEach((tr) => {
    const k = keys.find((x) => x.id === tr.dataset.keyId);
    tr.querySelectorAll("[data-act]").forEach((b) => (b.onclick = () => lifecycle(b.dataset.act, k)));
  });
}

function rowsTable(rows, cols, empty) {
  if (!rows.length) return `<div class="empty">${esc(empty)}</div>`;
  const max = Math.max(...rows.map((r) => Number(r.requests) || 0), 1);
  return `<table><thead><tr>${cols.map((c) => `<th>${esc(c[0])}</th>`).join("")}<th>Requests</th></tr></thead><tbody>${rows.map((r) => `
    <tr>${cols.map((c) => `<td class="${c[2] || ""}">${esc(c[1](r))}</td>`).join("")}
    <td style="width:150px">${esc(r.requests)}<div class="bar" style="width:${(100 * (Number(r.requests) || 0)) / max}%"></div></td></tr>`).join("")}</tbody></table>`;
}

async function keyPage(id, range = "24h") {
  const main = $("#main");
  let k;
  try { k = await api(`/v1/keys/${encodeURIComponent(id)}`); } catch (e) { main.innerHTML = `<div class="empty">${esc(e.message)}</div>`; return; }
  const since = { "24h": "24h", "7d": "7d", "30d": "30d" }[range];
  main.innerHTML = `
    <div class="page-head"><div><a href="#/keys" class="muted">← Keys</a><h1>${esc(k.name)} ${status(k.status)}</h1>
      <div class="mono muted">${esc(k.id)} · ${esc(k.masked_key)}</div></div>
      <div class="actions" id="key-actions">${keyActions(k)}</div></div>
    <div class="panel meta">
      <div><span>Project</span>${esc(k.project_id)}</div><div><span>Owner</span>${esc(k.owner || "-")}</div>
      <div><span>Created</span>${esc(when(k.created_at))}</div><div><span>Expires</span>${expiry(k)}</div>
      <div><span>Last used</span><b data-testid="key-last-used">${esc(ago(k.last_used_at))}</b> ${k.last_used_ip ? `<span class="muted mono">${esc(k.last_used_ip)}</span>` : ""}</div>
      <div><span>Scopes</span>${k.scopes.length ? k.scopes.map((s) => `<span class="pill grey">${esc(s)}</span>`).join(" ") : "-"}</div>
      <div><span>IP allowlist</span>${esc(k.ip_allowlist.join(", ") || "any")}</div><div><span>Quota</span>${esc(k.quota ?? "unlimited")}</div>
    </div>
    <div class="panel"><div class="page-head" style="margin-bottom:8px"><h2>Requests, errors and denials</h2>
      <div class="tabs">${["24h", "7d", "30d"].map((r) => `<button data-range="${r}" class="${r === range ? "active" : ""}">${r}</button>`).join("")}</div></div>
      <div class="muted" id="totals"></div><div class="chart-wrap"><canvas id="chart" data-testid="usage-chart"></canvas></div></div>
    <div class="grid-2">
      <div class="panel"><h2>Client addresses</h2><div id="ips" class="muted">Loading…</div></div>
      <div class="panel"><h2>Networks</h2><div id="networks" class="muted">Loading…</div></div>
      <div class="panel"><h2>Routes</h2><div id="routes" class="muted">Loading…</div></div>
      <div class="panel"><h2>User agents</h2><div id="agents" class="muted">Loading…</div></div>
    </div>
    <div class="panel"><h2>Signals, alerts and lifecycle</h2><ul class="timeline" id="timeline"></ul></div>`;
  main.querySelectorAll("[data-range]").forEach((b) => (b.onclick = () => keyPage(id, b.dataset.range)));
  main.querySelectorAll("#key-actions [data-act]").forEach((b) => (b.onclick = () => lifecycle(b.dataset.act, k)));
  const kid = encodeURIComponent(id);
  const [series, ips, nets, routes, agents, sig, alerts, events] = await Promise.all([
    api(`/v1/keys/${kid}/usage?range=${range}`),
    api(`/v1/usage/key_ips?key_id=${kid}&since=${since}`).catch(() => ({ rows: [] })),
    api(`/v1/usage/key_networks?key_id=${kid}&since=${since}`).catch(() => ({ rows: [] })),
    api(`/v1/usage/key_routes?key_id=${kid}&since=${since}`).catch(() => ({ rows: [] })),
    api(`/v1/usage/key_user_agents?key_id=${kid}&since=${since}`).catch(() => ({ rows: [] })),
    api(`/v1/signals?key_id=${kid}&since=90d`).catch(() => ({ rows: [] })),
    api(`/v1/alerts?key_id=${kid}&since=90d`).catch(() => ({ rows: [] })),
    api(`/v1/keys/${kid}/events`).catch(() => []),
  ]);
  drawChart(series);
  $("#totals").textContent = `${series.totals.requests} requests · ${series.totals.errors} errors · ${series.totals.denials} denials in the last ${range}`;
  $("#ips").innerHTML = rowsTable(ips.rows, [["Address", (r) => r.ip, "mono"], ["Last seen", (r) => ago(r.last_seen)]], "No requests in this range.");
  $("#networks").innerHTML = rowsTable(nets.rows, [["Network", (r) => r.network, "mono"], ["First seen", (r) => day(r.first_seen)]], "No requests in this range.");
  $("#routes").innerHTML = rowsTable(routes.rows, [["Service", (r) => r.service], ["Route", (r) => `${r.method} ${r.route}`, "mono"]], "No requests in this range.");
  $("#agents").innerHTML = rowsTable(agents.rows, [["User agent", (r) => r.user_agent || "(none)"]], "No requests in this range.");
  const items = [
    ...sig.rows.map((s) => ({ at: s.detected_at, tag: severityPill(s.severity), text: `<b>${esc(s.kind)}</b> — ${esc(s.message)}` })),
    ...alerts.rows.map((a) => ({ at: a.opened_at, tag: `<span class="pill red">alert</span>`, text: `<b>${esc(a.rule)}</b> (${esc(a.status)}) — ${esc(a.message)}` })),
    ...events.map((e) => ({ at: e.occurred_at, tag: `<span class="pill blue">${esc(e.action)}</span>`, text: `by ${esc(e.actor)}${e.reason ? " — " + esc(e.reason) : ""}` })),
  ].sort((a, b) => new Date(b.at) - new Date(a.at));
  $("#timeline").innerHTML = items.length ? items.map((i) => `<li><span class="muted">${esc(when(i.at))}</span><span>${i.tag}</span><span>${i.text}</span></li>`).join("") : `<li class="empty">Nothing yet.</li>`;
}

function drawChart(series) {
  if (chart) chart.destroy();
  const fmt = series.bucket_seconds < 86400
    ? (t) => new Date(t).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })
    : (t) => new Date(t).toLocaleDateString(undefined, { month: "short", day: "numeric" });
  const ds = (label, key, color) => ({ label, data: series.points.map((p) => p[key]), backgroundColor: color, borderColor: color, borderRadius: 3, maxBarThickness: 26 });
  chart = new Chart($("#chart"), {
    type: "bar",
    data: { labels: series.points.map((p) => fmt(p.t)), datasets: [ds("Requests", "requests", "#6366f1"), ds("Errors", "errors", "#ef4444"), ds("Denials", "denials", "#eab308")] },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false, interaction: { mode: "index", intersect: false },
      plugins: { legend: { labels: { color: "#c9cde3", usePointStyle: true } } },
      scales: {
        x: { stacked: false, ticks: { color: "#8d93b5", maxRotation: 0, autoSkip: true, maxTicksLimit: 12 }, grid: { color: "rgba(42,48,82,.5)" } },
        y: { beginAtZero: true, ticks: { color: "#8d93b5", precision: 0 }, grid: { color: "rgba(42,48,82,.5)" } },
      },
    },
  });
}

async function alertsPage() {
  const main = $("#main");
  main.innerHTML = `<div class="page-head"><div><h1>Alerts &amp; signals</h1><div class="muted">What fired, on which key, and why.</div></div></div>
    <div class="panel"><h2>Alerts</h2><div id="alerts">Loading…</div></div>
    <div class="panel"><h2>Recent signals</h2><div id="signals">Loading…</div></div>`;
  const [alerts, sig] = await Promise.all([api("/v1/alerts?since=90d"), api("/v1/signals?since=30d&limit=200")]);
  const keyLink = (id) => `<a href="#/keys/${encodeURIComponent(id)}" class="mono">${esc(id)}</a>`;
  $("#alerts").innerHTML = alerts.rows.length ? `<table data-testid="alerts-table"><thead><tr><th>Opened</th><th>Severity</th><th>Rule</th><th>Key</th><th>Project</th><th>Status</th><th>Message</th><th></th></tr></thead><tbody>${alerts.rows.map((a) => `
    <tr><td>${esc(when(a.opened_at))}</td><td>${severityPill(a.severity)}</td><td>${esc(a.rule)}</td><td>${keyLink(a.key_id)}</td><td>${esc(a.project_id)}</td>
    <td><span class="pill ${{ open: "red", acknowledged: "yellow", resolved: "green" }[a.status] || "grey"}">${esc(a.status)}</span></td><td>${esc(a.message)}</td>
    <td>${a.status === "resolved" ? "" : `<button class="ghost small" data-expect-alert="${esc(a.alert_id)}">Expected</button>`}</td></tr>`).join("")}</tbody></table>`
    : `<div class="empty">No alerts. Quiet is good.</div>`;
  $("#signals").innerHTML = sig.rows.length ? `<table data-testid="signals-table"><thead><tr><th>Detected</th><th>Severity</th><th>Kind</th><th>Key</th><th>Why</th><th></th></tr></thead><tbody>${sig.rows.map((s) => `
    <tr><td>${esc(when(s.detected_at))}</td><td>${severityPill(s.severity)}</td><td>${esc(s.kind)}</td><td>${keyLink(s.key_id)}</td><td>${esc(s.message)}</td>
    <td>${s.marked_expected ? `<span class="pill green" data-marked-expected>expected</span>` : `<button class="ghost small" data-expect-signal="${esc(s.signal_id)}">Expected</button>`}</td></tr>`).join("")}</tbody></table>`
    : `<div class="empty">No signals in the last 30 days.</div>`;
  main.querySelectorAll("[data-expect-signal]").forEach((b) => b.addEventListener("click", () =>
    markExpected(`/v1/signals/${encodeURIComponent(b.dataset.expectSignal)}/expected`, "Mark this signal as expected")));
  main.querySelectorAll("[data-expect-alert]").forEach((b) => b.addEventListener("click", () =>
    markExpected(`/v1/alerts/${encodeURIComponent(b.dataset.expectAlert)}/expected`, "Mark this alert as expected (and resolve it)")));
}

// Feedback: the detector that raised a signal learns it for that key; the audit trail records it.
function markExpected(path, title) {
  const d = $("#expect");
  $("#expect-title").textContent = title; $("#expect-reason").value = ""; $("#expect-error").textContent = "";
  $("#expect-form").onsubmit = async (ev) => {
    ev.preventDefault();
    try {
      const res = await api(path, { method: "POST", body: { reason: $("#expect-reason").value } });
      d.close();
      const m = res.marks[0];
      toast(m.already_marked ? `Already marked expected (${m.kind} on ${m.key_id})`
        : m.learnt_by ? `Marked expected: ${m.learnt_by} learns it for ${m.key_id}` : `Marked expected (audit trail only: no detector learns ${m.kind})`);
      route();
    } catch (e) { $("#expect-error").textContent = e.message; }
  };
  d.showModal();
}

// ------------------------------------------------------------------ router
async function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { signOut(); return; }
  $("#signout").hidden = false;
  const hash = location.hash || "#/keys";
  const [, page, id] = hash.split("/");
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === page));
  try {
    if (page === "keys" && id) await keyPage(decodeURIComponent(id));
    else if (page === "alerts") await alertsPage();
    else await keysPage();
  } catch (e) { toast(e.message, true); }
}
window.addEventListener("hashchange", route);
route();
