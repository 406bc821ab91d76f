// Nightshift board: automations (list, one automation's page with its
// switch and timeline) and the inbox of automation runs. Everything from
// the server goes in with textContent (NS.el), never as HTML.
"use strict";

(() => {
  const { api, el } = NS;
  const $ = id => document.getElementById(id);

  function when(s) {
    if (!s || s.startsWith("0001-")) return "—";
    const d = new Date(s);
    return isNaN(d) ? "—" : d.toLocaleString();
  }

  function status(a) { return !a.enabled ? "disabled" : (a.paused ? "paused" : "enabled"); }

  function trigger(d) {
    if (d.schedule) return d.schedule + (d.timezone ? " (" + d.timezone + ")" : "");
    if (d.on) return "on " + (d.on.source || "*") + " " + (d.on.kind || "*") + (d.where && d.where.length ? " where " + d.where.map(w => w.field + " " + w.op + " " + [].concat(w.value).join(", ")).join(" and ") : "");
    return "—";
  }

  function cost(c) { return "$" + (c || 0).toFixed(c && c < 1 ? 3 : 2); }

  function outcomeBadge(r) {
    const cls = { succeeded: "s-done", failed: "s-failed", cancelled: "s-cancelled", started: "s-running", pending: "s-queued", refused: "s-needs_input", skipped: "s-needs_input", paused: "s-failed" }[r.status] || "";
    return el("span", { class: "badge " + cls, text: r.status + (r.task_state && r.status === "started" ? " · " + NS.stateLabel(r.task_state) : "") });
  }

  function taskLink(r) {
    if (!r.task_id || ["refused", "skipped", "paused"].includes(r.status)) return "—";
    return el("a", { href: "/tasks/" + encodeURIComponent(r.task_id), text: r.task_id.slice(0, 8) });
  }

  async function listPage() {
    const body = $("automations").tBodies[0];
    try {
      const resp = await api("/api/v1/automations");
      body.replaceChildren();
      for (const a of resp.automations || []) {
        body.append(el("tr", { "data-name": a.name },
          el("td", {}, el("a", { href: "/automations/" + encodeURIComponent(a.name), text: a.name })),
          el("td", {}, el("span", { class: "badge a-" + status(a), text: status(a) })),
          el("td", { text: trigger(a.definition) }),
          el("td", { text: a.definition.mode || "change" }),
          el("td", { text: when(a.next_fire) }),
          el("td", { text: String(a.failures || 0) })));
      }
      $("empty").hidden = (resp.automations || []).length > 0;
      $("status").textContent = "";
    } catch (e) {
      $("status").textContent = "Could not load automations: " + e.message;
    }
    document.body.dataset.ready = "true";
  }

  async function automationPage() {
    const name = decodeURIComponent(location.pathname.split("/").pop());
    const path = "/api/v1/automations/" + encodeURIComponent(name);
    let current = null;
    async function load() {
      const [a, runs] = await Promise.all([api(path), api(path + "/runs?limit=100")]);
      current = a;
      document.title = a.name + " · " + document.title.split(" · ").pop();
      $("title").textContent = a.name;
      $("state").textContent = status(a);
      $("state").className = "badge a-" + status(a);
      $("enabled").checked = a.enabled && !a.paused;
      $("paused").hidden = !a.paused;
      $("paused").textContent = a.paused ? "Paused after " + a.paused_reason + ". Switch it on to resume (clears the failure count)." : "";
      const d = a.definition;
      const repos = d.repo ? [d.repo] : (d.repos && d.repos.length ? d.repos : ["the event's repository"]);
      const rows = [
        ["Trigger", trigger(d)], ["Next fire", when(a.next_fire)], ["Repository", repos.join(", ")], ["Agent", d.agent || "default"],
        ["Mode", d.mode], ["Respond", d.respond], ["Inbox", d.inbox ? "yes" : "no"], ["Concurrency", String(d.concurrency) + " (" + a.active + " active)"],
        ["Failures", a.failures + " of " + d.pause_after], ["Spent today", cost(a.day_cost_usd) + (d.budget && d.budget.per_day_usd ? " of " + cost(d.budget.per_day_usd) : "")],
        ["Version", a.version + " (" + a.origin + (a.updated_by ? ", by " + a.updated_by : "") + ")"], ["Updated", when(a.updated_at)],
      ];
      $("details").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
      $("definition").textContent = JSON.stringify(d, null, 2);
      const body = $("runs").tBodies[0];
      body.replaceChildren(...(runs.runs || []).map(r => el("tr", { "data-run": r.id, "data-status": r.status },
        el("td", { text: when(r.at) }),
        el("td", { text: r.trigger + (r.actor ? " (" + r.actor + ")" : "") }),
        el("td", {}, outcomeBadge(r)),
        el("td", {}, taskLink(r)),
        el("td", { text: cost(r.cost_usd) }),
        el("td", { text: r.reason || "" }))));
      $("no-runs").hidden = (runs.runs || []).length > 0;
    }
    $("enabled").addEventListener("change", async ev => {
      const on = ev.target.checked;
      $("action-status").textContent = on ? "Enabling…" : "Disabling…";
      try {
        await api(path + (on ? "/enable" : "/disable"), { method: "POST" });
        $("action-status").textContent = on ? "Enabled." : "Disabled.";
      } catch (e) {
        $("action-status").textContent = e.message;
      }
      await load().catch(() => {});
    });
    $("btn-run").addEventListener("click", async () => {
      $("action-status").textContent = "Starting…";
      try {
        const r = await api(path + "/run", { method: "POST" });
        $("action-status").textContent = (r.runs || []).map(x => x.status + (x.reason ? ": " + x.reason : "")).join("; ") || "Started.";
      } catch (e) {
        $("action-status").textContent = e.message;
      }
      await load().catch(() => {});
    });
    try {
      await load();
    } catch (e) {
      $("title").textContent = name;
      $("action-status").textContent = e.status === 404 ? "No such automation." : "Could not load: " + e.message;
    }
    setInterval(() => load().catch(() => {}), 5000);
    document.body.dataset.ready = "true";
  }

  async function inboxPage() {
    async function load() {
      const resp = await api("/api/v1/inbox?limit=200");
      $("unread").textContent = resp.unread ? resp.unread + " unread" : "";
      $("inbox").replaceChildren(...(resp.runs || []).map(r => {
        const mark = el("button", { type: "button", class: "small", text: r.read ? "Mark unread" : "Mark read" });
        mark.addEventListener("click", async () => {
          try { await api("/api/v1/inbox/" + encodeURIComponent(r.id) + (r.read ? "/unread" : "/read"), { method: "POST" }); }
          catch (e) { $("status").textContent = e.message; }
          await load().catch(() => {});
        });
        return el("li", { class: "inbox-item" + (r.read ? " read" : " unread"), "data-run": r.id },
          el("a", { href: "/automations/" + encodeURIComponent(r.automation), text: r.automation }), " ",
          outcomeBadge(r), " ", taskLink(r), " ",
          el("span", { class: "muted", text: when(r.at) + " · " + cost(r.cost_usd) + (r.reason ? " · " + r.reason : "") }), " ", mark);
      }));
      $("empty").hidden = (resp.runs || []).length > 0;
      $("status").textContent = "";
    }
    try { await load(); } catch (e) { $("status").textContent = "Could not load the inbox: " + e.message; }
    setInterval(() => load().catch(() => {}), 5000);
    document.body.dataset.ready = "true";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const c = document.body.classList;
    const nav = $(c.contains("page-inbox") ? "nav-inbox" : "nav-automations");
    if (nav) nav.setAttribute("aria-current", "page");
    if (c.contains("page-automations")) listPage();
    else if (c.contains("page-automation")) automationPage();
    else if (c.contains("page-inbox")) inboxPage();
  });
})();
