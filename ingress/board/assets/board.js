// Nightshift board: the Kanban. It opens one Server-Sent Events stream,
// GET /api/v1/events, which starts with a snapshot of the newest tasks and
// then sends every state change; cards move between columns as changes
// arrive. No polling: a broken stream reconnects by itself (EventSource)
// and a reconnect brings a fresh snapshot.
"use strict";

(() => {
  const { el } = NS;
  const tasks = new Map();
  const cols = ["queued", "running", "needs_input", "review", "done", "failed"];
  const colNames = { queued: "Queued", running: "Running", needs_input: "Needs input", review: "Review", done: "Done", failed: "Failed" };
  const conn = document.getElementById("conn");
  const announce = document.getElementById("announce");
  const fText = document.getElementById("f-text");
  const fSource = document.getElementById("f-source");
  let ready = false;

  function card(t) {
    const tr = NS.trigger(t);
    const id = "t-" + t.id;
    const meta = el("dl", {},
      el("dt", {}, "Trigger"), el("dd", {}, tr.url ? el("a", { href: tr.url, rel: "noopener noreferrer" }, tr.label) : tr.label),
      el("dt", {}, "Agent"), el("dd", {}, t.agent || "—"));
    if (t.identity && (t.identity.name || t.identity.email)) {
      meta.append(el("dt", {}, "Identity"), el("dd", { title: t.identity.email || "" }, t.identity.name || t.identity.email));
    }
    meta.append(el("dt", {}, "Elapsed"), el("dd", {}, el("span", { class: "elapsed" }, NS.elapsed(t))));
    const tok = NS.tokens(t);
    if (tok) meta.append(el("dt", {}, "Usage"), el("dd", {}, tok));
    const pr = NS.safeURL(t.pr_url);
    if (pr) meta.append(el("dt", {}, "PR"), el("dd", {}, el("a", { href: pr, rel: "noopener noreferrer" }, NS.prLabel(pr))));
    else if (t.review) meta.append(el("dt", {}, "Branch"), el("dd", {}, t.branch));
    if (t.state === "queued" && t.position) meta.append(el("dt", {}, "Position"), el("dd", {}, String(t.position)));
    if ((t.state === "failed" || t.state === "cancelled") && (t.reason || t.error)) {
      meta.append(el("dt", {}, "Why"), el("dd", { title: t.error || "" }, t.reason || t.error));
    }
    const prompt = (t.prompt || "").split("\n")[0];
    return el("li", { class: "card", "data-task-id": t.id, "data-state": t.state },
      el("article", { "aria-labelledby": id },
        el("h3", { id }, el("a", { href: "/tasks/" + encodeURIComponent(t.id) }, NS.repoName(t.repo) || t.repo, el("span", { class: "visually-hidden" }, " task " + t.id.slice(0, 8)))),
        el("p", { class: "prompt", title: t.prompt || "" }, prompt),
        meta,
        el("div", { class: "foot" },
          el("span", { class: "badge s-" + t.state }, NS.stateLabel(t.state)),
          approveButton(t),
          el("code", { class: "muted", title: t.id }, t.id.slice(0, 8)))));
  }

  // fillPlans fetches the tasks waiting for input that the snapshot lists
  // without their mode (the task index does not keep it), so that a plan
  // waiting for review gets its Approve button.
  async function fillPlans() {
    for (const t of [...tasks.values()]) {
      if (t.state !== "needs_input" || t.mode !== undefined) continue;
      try {
        const full = await NS.api("/api/v1/tasks/" + encodeURIComponent(t.id));
        const now = tasks.get(t.id);
        if (now && now.updated_at === t.updated_at) { tasks.set(t.id, Object.assign({}, now, full)); render(); }
      } catch (_) { /* the card stays without a button */ }
    }
  }

  // approveButton is the Approve button of a plan card waiting for review,
  // or null: a click posts /approve as the task's message.
  function approveButton(t) {
    if (!NS.planForReview(t)) return null;
    const label = "Approve plan of task " + t.id.slice(0, 8);
    return el("button", { type: "button", class: "approve", "aria-label": label, title: label, onclick: async e => {
      const b = e.currentTarget;
      b.disabled = true;
      try {
        await NS.approvePlan(t.id);
        b.textContent = "Approved";
      } catch (err) {
        b.disabled = false;
        b.title = "Approval failed: " + err.message;
        announce.textContent = "Approval failed: " + err.message;
      }
    } }, "Approve");
  }

  function visible(t) {
    if (fSource.value && t.source !== fSource.value) return false;
    const q = fText.value.trim().toLowerCase();
    if (!q) return true;
    return [t.repo, t.prompt, t.agent, t.id, t.state, t.identity && t.identity.name].some(s => (s || "").toLowerCase().includes(q));
  }

  function sortKey(col) {
    if (col === "queued") return (a, b) => Date.parse(a.created_at) - Date.parse(b.created_at);
    return (a, b) => Date.parse(b.updated_at) - Date.parse(a.updated_at);
  }

  function render() {
    const byCol = Object.fromEntries(cols.map(c => [c, []]));
    for (const t of tasks.values()) if (visible(t)) byCol[NS.column(t.state)].push(t);
    for (const c of cols) {
      const list = document.getElementById("col-" + c);
      const items = byCol[c].sort(sortKey(c));
      const focused = document.activeElement && list.contains(document.activeElement) ? document.activeElement.closest(".card") : null;
      const keepID = focused && focused.dataset.taskId;
      list.replaceChildren(...(items.length ? items.map(card) : [el("li", { class: "empty" }, "No tasks")]));
      if (keepID) {
        const again = list.querySelector('[data-task-id="' + CSS.escape(keepID) + '"] h3 a');
        if (again) again.focus();
      }
      document.getElementById("n-" + c).textContent = String(items.length);
    }
  }

  function flash(id) {
    const n = document.querySelector('.card[data-task-id="' + CSS.escape(id) + '"]');
    if (n) { n.classList.add("flash"); setTimeout(() => n.classList.remove("flash"), 1300); }
  }

  function connect() {
    const es = new EventSource("/api/v1/events");
    es.addEventListener("open", () => { conn.textContent = "Live"; conn.className = "conn live"; });
    es.addEventListener("snapshot", ev => {
      const snap = JSON.parse(ev.data);
      tasks.clear();
      for (const t of snap.tasks || []) tasks.set(t.id, t);
      ready = true;
      document.body.dataset.ready = "true";
      render();
      fillPlans();
    });
    es.addEventListener("task", ev => {
      const e = JSON.parse(ev.data);
      const t = e.task;
      const before = tasks.get(t.id);
      tasks.set(t.id, t);
      render();
      const from = before ? NS.column(before.state) : null;
      const to = NS.column(t.state);
      if (from !== to) {
        flash(t.id);
        announce.textContent = NS.repoName(t.repo) + " " + t.id.slice(0, 8) + " moved to " + colNames[to] + " (" + NS.stateLabel(t.state) + ")";
      }
    });
    es.addEventListener("error", async ev => {
      if (ev.data) { conn.textContent = "Error: " + ev.data; }
      conn.className = "conn down";
      conn.textContent = "Reconnecting…";
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (logged out?): check, then retry.
        try { await NS.api("/api/v1/session"); } catch (_) { return; }
        setTimeout(connect, 2000);
      }
    });
  }

  // New task: the same POST /api/v1/tasks as the API and the CLI, with the
  // session and its CSRF token like every board action; the server
  // validates it, and its answer to a refused task shows under the form.
  const ntForm = document.getElementById("new-task-form");
  const ntError = document.getElementById("nt-error");
  const ntStatus = document.getElementById("nt-status");
  NS.getSession().then(s => {
    if (s && !s.open && (s.principal || {}).role !== "admin") document.getElementById("new-task").hidden = true;
  });
  ntForm.addEventListener("submit", async e => {
    e.preventDefault();
    const val = id => document.getElementById(id).value.trim();
    const body = { repo: val("nt-repo"), prompt: val("nt-prompt") };
    if (val("nt-agent")) body.agent = val("nt-agent");
    if (val("nt-branch")) body.branch = val("nt-branch");
    const btn = document.getElementById("nt-submit");
    btn.disabled = true;
    ntError.hidden = true;
    ntError.textContent = "";
    ntStatus.textContent = "Starting…";
    try {
      const r = await NS.api("/api/v1/tasks", { method: "POST", body });
      ntStatus.replaceChildren("Task ", el("a", { href: "/tasks/" + encodeURIComponent(r.id), "data-task-id": r.id }, r.id.slice(0, 8)), " " + NS.stateLabel(r.state) + ".");
      document.getElementById("nt-prompt").value = "";
    } catch (err) {
      ntStatus.textContent = "";
      ntError.textContent = "Not started: " + err.message;
      ntError.hidden = false;
    } finally {
      btn.disabled = false;
    }
  });
  fText.addEventListener("input", render);
  fSource.addEventListener("change", render);
  document.getElementById("filters").addEventListener("submit", e => e.preventDefault());
  const nav = document.getElementById("nav-board");
  if (nav) nav.setAttribute("aria-current", "page");
  // Elapsed times tick locally; only the clock, not the data.
  setInterval(() => {
    if (!ready) return;
    for (const n of document.querySelectorAll(".card")) {
      const t = tasks.get(n.dataset.taskId);
      if (t && NS.active(t.state)) { const e = n.querySelector(".elapsed"); if (e) e.textContent = NS.elapsed(t); }
    }
  }, 1000);
  connect();
})();
