// The rollgate dashboard: renders the state the page embeds, then follows
// /ui/events (server-sent events). Everything from the node goes through
// textContent, never innerHTML.
"use strict";

let current = null;
let tokenInMemory = "";

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) el.setAttribute(k, v);
    else el[k] = v;
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function pill(text, cls) {
  return h("span", { class: "pill s-" + (cls || text) }, text);
}

function ago(ms) {
  if (!ms) return "-";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s ago";
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m ago";
}

function duration(secs) {
  if (secs === undefined || secs === null) return "-";
  return secs < 60 ? secs + "s" : Math.floor(secs / 60) + "m" + String(secs % 60).padStart(2, "0") + "s";
}

// A transport version id as the project writes it: M_NNN_S_PP (1002000 is 1_002_0_00).
function tv(id) {
  if (typeof id !== "number") return "-";
  return `${Math.floor(id / 1000000)}_${String(Math.floor(id / 1000) % 1000).padStart(3, "0")}_${Math.floor(id / 100) % 10}_${String(id % 100).padStart(2, "0")}`;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderSummary(s) {
  const running = s.nodes.filter((n) => n.state === "running").length;
  const releases = [...new Set(s.nodes.map((n) => n.release))];
  document.getElementById("summary").textContent =
    `cluster ${s.cluster_id} · epoch ${s.epoch} · ${running} of ${s.nodes.length} members running · ` +
    `release${releases.length > 1 ? "s" : ""} ${releases.join(", ")} · served by ${s.node.node_id} (release ${s.node.release})`;
  const banner = document.getElementById("banner");
  banner.hidden = s.store.reachable;
  banner.textContent = s.store.reachable ? "" :
    `Node ${s.node.node_id} cannot reach the metadata store: ${s.store.last_error || "unknown error"}. What you see may be out of date.`;
}

function renderMembers(s) {
  const links = new Map(s.links.map((m) => [m.node_id, m]));
  const rows = s.nodes.map((n) => {
    const m = links.get(n.node_id);
    let linkCell;
    if (!m) linkCell = h("span", { class: "muted" }, n.state === "running" ? "-" : "stopped");
    else if (m.error) linkCell = h("span", { class: "muted" }, "unknown: " + m.error);
    else if (m.links.length === 0) linkCell = h("span", { class: "muted" }, "no links reported");
    else linkCell = m.links.map((l) => h("span", { class: "link" },
      "\u2192 " + l.peer + ": ",
      l.state === "connected"
        ? h("span", { class: "mono", title: "transport id " + l.transport + (l.tls ? ", mutual TLS" : l.tls === false ? ", plaintext" : "") },
            `v${l.protocol} / ${tv(l.transport)}`, l.tls ? " tls" : l.tls === false ? " plaintext" : "", l.authenticated ? " \u{1F512}" : "")
        : pill(l.state),
      l.error && l.state !== "connected" ? h("span", { class: "muted" }, " " + l.error) : null));
    return h("tr", { "data-node": n.node_id },
      h("td", {}, h("strong", {}, n.node_id), n.this_node ? h("span", { class: "muted" }, " (this page)") : null),
      h("td", {}, n.release),
      h("td", { class: "state" }, pill(n.state)),
      h("td", { class: "mono" }, n.protocol),
      h("td", { class: "mono", title: "transport id " + n.transport }, tv(n.transport)),
      h("td", { class: "mono", title: n.release_manifest || "" }, n.release_manifest ? n.release_manifest.slice(7, 19) : "-"),
      h("td", {}, linkCell));
  });
  fill(document.querySelector("#members tbody"), rows);
}

function renderFlags(s) {
  const rows = s.flags.map((f) => {
    let action = null;
    if (f.state === "disabled") {
      const blocked = f.blockers.length > 0;
      action = h("button", {
        class: "action primary", "data-action": "enable", disabled: blocked,
        title: blocked ? "Fix what blocks it first" : "Enable " + f.name,
        onclick: () => openDialog("enable", f),
      }, "Enable");
    } else if (f.state === "enabled" && f.reversible) {
      action = h("button", { class: "action danger", "data-action": "disable", onclick: () => openDialog("disable", f) }, "Disable");
    }
    const owner = f.owner ? " by " + f.owner : "";
    const blockers = f.blockers.length
      ? h("ul", { class: "blockers" }, f.blockers.map((b) => h("li", {}, b)))
      : h("span", { class: "muted" }, f.state === "disabled" ? "nothing: ready to enable" : "-");
    return h("tr", { "data-flag": f.name },
      h("td", {}, h("strong", {}, f.name), h("div", { class: "muted" }, f.description), f.note ? h("div", { class: "muted" }, "note: " + f.note) : null),
      h("td", { class: "state" }, pill(f.state + owner, f.state)),
      h("td", {}, f.stability),
      h("td", {}, f.introduced_in || "-"),
      h("td", {}, f.reversible ? "yes" : "no"),
      h("td", { class: "fix" }, blockers),
      h("td", {}, action));
  });
  fill(document.querySelector("#flags tbody"), rows);
}

function renderMigrations(s) {
  const box = document.getElementById("migrations");
  const m = s.migrations;
  if (m.error) {
    box.replaceChildren(h("p", { class: "error" }, "Cannot read the migrations: " + m.error));
    return;
  }
  const parts = [];
  if (m.services.length) {
    parts.push(h("table", {}, h("thead", {}, h("tr", {}, ["Service", "Format", "State", "Owner", "Last step"].map((t) => h("th", {}, t)))),
      h("tbody", {}, m.services.map((svc) => {
        const last = svc.history.length ? svc.history[svc.history.length - 1] : null;
        return h("tr", {}, h("td", {}, svc.service), h("td", { class: "num" }, svc.version), h("td", {}, pill(svc.state)),
          h("td", {}, svc.owner ? svc.owner.node : "-"),
          h("td", {}, last ? `${last.from} \u2192 ${last.to}, ${ago(last.finished_ms)}` : "-"));
      }))));
  }
  const all = m.nodes.flatMap((n) => n.migrations);
  if (all.length) {
    parts.push(h("table", { id: "migration-table" }, h("thead", {}, h("tr", {}, ["Node", "Migration", "Gate", "State", "Progress", "Rate", "ETA"].map((t) => h("th", {}, t)))),
      h("tbody", {}, all.map((g) => {
        const pct = g.total ? Math.min(100, (100 * g.done) / g.total) : (g.state === "done" ? 100 : 0);
        const active = g.state === "running" || (g.state === "pending" && g.gate_open);
        return h("tr", {}, h("td", {}, g.node), h("td", {}, g.id, g.direction === "reverse" ? " (reverse)" : ""),
          h("td", {}, `${g.gate.kind === "flag" ? "flag" : "feature"} ${g.gate.name}`),
          h("td", {}, pill(g.state), g.error ? h("div", { class: "error" }, g.error) : null),
          h("td", {}, h("div", { class: "bar", title: `${g.done}/${g.total}` }, h("span", { style: `width:${pct.toFixed(1)}%` })),
            h("span", { class: "muted" }, `${g.done}/${g.total} (${pct.toFixed(0)}%)`)),
          h("td", { class: "num" }, g.rate_per_s ? g.rate_per_s.toFixed(0) + "/s" : "-"),
          h("td", { class: "num" }, active ? duration(g.eta_s) : "-"));
      }))));
  }
  if (!parts.length) parts.push(h("p", { class: "muted" }, "No migrations."));
  box.replaceChildren(...parts);
}

function renderPlanChoices(s) {
  const select = document.getElementById("plan-release");
  const chosen = select.value;
  const options = s.releases.map((r) => h("option", { value: r }, r));
  if (!options.length) options.push(h("option", { value: "" }, "(the service published no release table)"));
  select.replaceChildren(...options);
  if (s.releases.includes(chosen)) select.value = chosen;
  else if (s.releases.length) select.value = s.releases[s.releases.length - 1];
}

function renderFloor(s) {
  const box = document.getElementById("floor");
  const f = s.release_floor;
  box.replaceChildren(f
    ? h("p", {}, `Release floor: ${f.release}, raised by ${f.by_node} ${ago(f.finalized_at_ms)}. ` +
        "No node below it may boot or join; the floor never goes down.")
    : h("p", { class: "muted" }, "No release floor yet: `rollgate upgrade finalize RELEASE` raises it once every member runs RELEASE or later."));
}

function renderAudit(s) {
  const rows = s.audit.map((e) => h("tr", {},
    h("td", { title: new Date(e.at_ms).toISOString() }, ago(e.at_ms)),
    h("td", {}, e.node),
    h("td", {}, e.action),
    h("td", { class: "mono" }, typeof e.request === "string" ? e.request : JSON.stringify(e.request)),
    h("td", { class: "mono" }, e.caller.via + (e.caller.token ? " " + e.caller.token : "")),
    h("td", {}, pill(e.outcome)),
    h("td", {}, e.message)));
  if (!rows.length) rows.push(h("tr", {}, h("td", { colSpan: 7, class: "muted" }, "Nothing recorded yet.")));
  fill(document.querySelector("#audit tbody"), rows);
}

function render(s) {
  if (!s) return;
  current = s;
  renderSummary(s);
  renderMembers(s);
  renderFlags(s);
  renderMigrations(s);
  renderPlanChoices(s);
  renderFloor(s);
  renderAudit(s);
  document.body.dataset.epoch = String(s.epoch);
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
  document.dispatchEvent(new CustomEvent("rollgate:render", { detail: s }));
}

// ---- enable / disable ----

let pending = null;

function openDialog(action, flag) {
  pending = { action, flag };
  const irreversible = action === "enable" && !flag.reversible;
  const experimental = action === "enable" && flag.stability === "experimental";
  document.getElementById("dialog-title").textContent = (action === "enable" ? "Enable " : "Disable ") + flag.name;
  document.getElementById("dialog-text").textContent = flag.description;
  const warning = document.getElementById("dialog-warning");
  const notes = [];
  if (irreversible) notes.push(`This cannot be undone: once ${flag.name} is enabled it cannot be disabled, and nodes of releases before ${flag.introduced_in || "the one that introduced it"} can no longer join.`);
  if (experimental) notes.push(`${flag.name} is experimental: it may change or go away in a later release.`);
  if (action === "disable") notes.push(`Nodes stop producing data that needs ${flag.name}; its disable step converts data back first.`);
  warning.hidden = notes.length === 0;
  warning.textContent = notes.join(" ");
  const confirmLabel = document.getElementById("dialog-confirm-label");
  const confirm = document.getElementById("dialog-confirm");
  confirmLabel.hidden = !irreversible;
  confirm.checked = false;
  document.getElementById("dialog-confirm-text").textContent = `I understand that enabling ${flag.name} cannot be undone`;
  const token = document.getElementById("dialog-token");
  token.value = sessionStorage.getItem("rollgate-token") || tokenInMemory;
  document.getElementById("dialog-remember").checked = !!sessionStorage.getItem("rollgate-token");
  document.getElementById("dialog-error").textContent = "";
  const ok = document.getElementById("dialog-ok");
  ok.textContent = action === "enable" ? "Enable" : "Disable";
  ok.disabled = irreversible;
  document.getElementById("dialog").showModal();
  token.focus();
}

async function submitDialog(ev) {
  ev.preventDefault();
  if (!pending) return;
  const { action, flag } = pending;
  const token = document.getElementById("dialog-token").value.trim();
  const errorBox = document.getElementById("dialog-error");
  if (!token) {
    errorBox.textContent = "Type the admin token the node was started with.";
    return;
  }
  if (action === "enable" && !flag.reversible && !document.getElementById("dialog-confirm").checked) {
    errorBox.textContent = "Confirm that you understand this cannot be undone.";
    return;
  }
  const body = action === "enable"
    ? { flags: [flag.name], experimental: flag.stability === "experimental" }
    : { flag: flag.name };
  const ok = document.getElementById("dialog-ok");
  ok.disabled = true;
  errorBox.textContent = (action === "enable" ? "Enabling " : "Disabling ") + flag.name + "\u2026";
  try {
    const resp = await fetch("/admin/flags/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + token },
      body: JSON.stringify(body),
    });
    const answer = await resp.json().catch(() => null);
    if (!resp.ok) {
      errorBox.textContent = (answer && answer.error && answer.error.message) || `The node answered ${resp.status}.`;
      ok.disabled = false;
      return;
    }
    if (document.getElementById("dialog-remember").checked) sessionStorage.setItem("rollgate-token", token);
    else sessionStorage.removeItem("rollgate-token");
    tokenInMemory = token;
    document.getElementById("dialog").close();
    toast((action === "enable" ? "Enabled " : "Disabled ") + flag.name);
    refresh();
  } catch (e) {
    errorBox.textContent = "Cannot reach the node: " + e;
    ok.disabled = false;
  }
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function refresh() {
  try {
    const resp = await fetch("/ui/state");
    if (resp.ok) render(await resp.json());
  } catch (e) { /* the event stream catches up */ }
}

async function showPlan(ev) {
  ev.preventDefault();
  const to = document.getElementById("plan-release").value;
  const list = document.getElementById("plan");
  if (!to) return;
  try {
    const resp = await fetch("/admin/upgrade/plan?to=" + encodeURIComponent(to));
    const answer = await resp.json();
    if (!resp.ok) {
      list.replaceChildren(h("li", { class: "error" }, answer.error ? answer.error.message : `The node answered ${resp.status}.`));
      return;
    }
    list.replaceChildren(...(answer.steps.length
      ? answer.steps.map((s) => h("li", {}, s.description, s.command ? h("div", { class: "mono muted" }, "$ " + s.command) : null))
      : [h("li", { class: "muted" }, `Every member runs ${to} and every flag it adds is enabled: nothing to do.`)]));
  } catch (e) {
    list.replaceChildren(h("li", { class: "error" }, "Cannot reach the node: " + e));
  }
}

function follow() {
  const live = document.getElementById("live");
  const source = new EventSource("/ui/events");
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting\u2026"; live.className = "live off"; });
  source.addEventListener("state", (e) => render(JSON.parse(e.data)));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("dialog-form").addEventListener("submit", submitDialog);
  document.getElementById("dialog-cancel").addEventListener("click", () => document.getElementById("dialog").close());
  document.getElementById("dialog-confirm").addEventListener("change", (e) => { document.getElementById("dialog-ok").disabled = !e.target.checked; });
  document.getElementById("plan-form").addEventListener("submit", showPlan);
  try {
    render(JSON.parse(document.getElementById("initial-state").textContent));
  } catch (e) {
    document.getElementById("summary").textContent = "Cannot read the embedded state: " + e;
  }
  follow();
});
