// Nightshift board: one task. The live log, states and diff arrive over
// GET /api/v1/tasks/{id}/events (history first, then live); the diff is
// fetched when the stream says there is one; the identity's inbox on load,
// on state changes and on request. Actions post to the REST API with the
// session's CSRF token.
"use strict";

(() => {
  const { el } = NS;
  const id = decodeURIComponent(location.pathname.replace(/^\/tasks\//, "").replace(/\/$/, ""));
  const base = "/api/v1/tasks/" + encodeURIComponent(id);
  const $ = s => document.getElementById(s);
  const log = $("log"), stateEl = $("state"), details = $("details"), actionStatus = $("action-status");
  const btnCancel = $("btn-cancel"), btnRetry = $("btn-retry"), btnSend = $("btn-send");
  let task = null, canAct = true, lastSeq = 0, diffText = "", inboxFor = "";

  function applyReport(r) {
    if (!task) return;
    if (r.recorded && r.task) { task = r.task; return; }
    if (r.run && task.run && r.run < task.run) return;
    task.state = r.state;
    task.updated_at = r.at || task.updated_at;
    const p = r.patch || {};
    for (const k of ["identity", "usage", "commit", "pr_url", "review", "error", "reason", "diff", "answer", "plan"]) if (p[k] !== undefined) task[k] = p[k];
    if (r.run) task.run = r.run;
    task.question = r.state === "needs_input" ? (p.question || task.question) : "";
  }

  function row(dt, dd) { if (dd !== "" && dd !== null && dd !== undefined) details.append(el("dt", {}, dt), el("dd", {}, dd)); }

  function render() {
    const t = task;
    document.title = NS.repoName(t.repo) + " " + t.id.slice(0, 8) + " · Nightshift";
    $("title").textContent = (NS.repoName(t.repo) || t.repo) + " · " + t.id.slice(0, 8);
    stateEl.textContent = NS.stateLabel(t.state);
    stateEl.className = "badge s-" + t.state;
    stateEl.dataset.state = t.state;
    $("prompt").textContent = t.prompt;
    details.replaceChildren();
    const tr = NS.trigger(t);
    row("Trigger", tr.url ? el("a", { href: tr.url, rel: "noopener noreferrer" }, tr.label) : tr.label);
    row("Repository", t.repo);
    row("Agent", t.agent);
    const ident = t.identity || {};
    row("Identity", ident.name ? ident.name + (ident.email ? " <" + ident.email + ">" : "") : "");
    row("Elapsed", el("span", { id: "elapsed" }, NS.elapsed(t)));
    row("Usage", NS.tokens(t));
    row("Branch", t.branch);
    row("Commit", t.commit ? el("code", {}, t.commit.slice(0, 12)) : "");
    const pr = NS.safeURL(t.pr_url);
    row("Pull request", pr ? el("a", { href: pr, rel: "noopener noreferrer" }, NS.prLabel(pr)) : "");
    if (!pr && t.review) row("Review", t.review);
    row("Run", t.run > 1 ? String(t.run) : "");
    if (t.state === "failed" || t.state === "cancelled") row("Reason", t.reason || "");
    row("Error", t.error || "");
    row("Answer", t.answer ? el("div", { id: "answer", class: "answer" }, t.answer) : "");
    row("Created", new Date(t.created_at).toLocaleString());
    const finished = ["done", "failed", "cancelled"].includes(t.state);
    btnCancel.disabled = !canAct || finished;
    btnRetry.disabled = !canAct || !["failed", "cancelled", "done", "review"].includes(t.state);
    btnSend.disabled = !canAct;
    const asking = t.state === "needs_input" && !!t.question;
    $("question-box").hidden = !asking;
    $("question").textContent = asking ? t.question : "";
    $("btn-answer").disabled = !canAct;
    renderApprove(t);
    if (ident.id && ident.id !== inboxFor) loadInbox();
  }

  // renderApprove shows the Approve plan button while the task's plan
  // waits for review.
  function renderApprove(t) {
    $("approve-box").hidden = !NS.planForReview(t);
    $("btn-approve").disabled = !canAct;
  }

  function logLine(cls, stream, at, text) {
    const stick = $("autoscroll").checked;
    const ts = at ? new Date(at).toLocaleTimeString([], { hour12: false }) : "";
    log.append(el("div", { class: "line " + cls },
      el("span", { class: "ts" }, ts), el("span", { class: "st st-" + stream }, stream), el("span", { class: "tx" }, text)));
    if (stick) log.scrollTop = log.scrollHeight;
  }

  async function loadDiff() {
    let text = "";
    try { text = await NS.api(base + "/diff", { headers: { "Accept": "text/x-diff" } }); } catch (e) { /* none yet */ }
    // Never replace a diff the stream delivered with an older, empty answer.
    if (text || !diffText) { diffText = text || diffText; drawDiff(); }
  }

  function drawDiff() {
    const layout = document.querySelector("input[name=layout]:checked").value;
    const files = Diff.render(diffText, $("files"), $("diff"), layout);
    let a = 0, d = 0;
    for (const f of files) { a += f.added; d += f.deleted; }
    $("diffstat").textContent = files.length ? files.length + (files.length === 1 ? " file" : " files") + ", +" + a + " −" + d : "";
  }

  async function loadInbox() {
    const box = $("inbox");
    const ident = task && task.identity;
    if (!ident || !ident.id) { box.replaceChildren(el("p", { class: "muted" }, "No identity yet.")); return; }
    inboxFor = ident.id;
    try {
      const r = await NS.api("/api/v1/identities/" + encodeURIComponent(ident.id) + "/messages?limit=50");
      const msgs = (r && r.messages) || [];
      if (!msgs.length) { box.replaceChildren(el("p", { class: "muted" }, "No messages for " + (ident.email || ident.name) + " yet.")); return; }
      box.replaceChildren(el("ol", {}, ...msgs.map(m => el("li", {},
        el("div", {}, el("span", { class: "badge" }, m.kind), " ", el("span", { class: "from" }, m.from), " ",
          el("time", { class: "muted", datetime: m.received_at }, new Date(m.received_at).toLocaleString())),
        m.subject ? el("div", {}, m.subject) : null,
        el("pre", {}, (m.body || "").slice(0, 2000))))));
    } catch (e) {
      box.replaceChildren(el("p", { class: "muted" }, e.status === 403 ? "Reading the inbox needs an admin token." : "Inbox unavailable: " + e.message));
    }
  }

  async function act(path, body, label) {
    actionStatus.textContent = label + "…";
    try {
      await NS.api(base + path, { method: "POST", body: body || {} });
      actionStatus.textContent = label + " requested.";
      return true;
    } catch (e) {
      actionStatus.textContent = label + " failed: " + e.message;
      return false;
    }
  }

  function stream() {
    const es = new EventSource(base + "/events");
    es.addEventListener("state", ev => {
      const seq = +ev.lastEventId || 0;
      if (seq && seq <= lastSeq) return;
      lastSeq = seq || lastSeq;
      const r = JSON.parse(ev.data);
      applyReport(r);
      logLine("state", "state", r.at, "→ " + NS.stateLabel(r.state) + (r.reason ? " (" + r.reason + ")" : ""));
      render();
    });
    es.addEventListener("log", ev => {
      const seq = +ev.lastEventId || 0;
      if (seq && seq <= lastSeq) return;
      lastSeq = seq || lastSeq;
      const l = JSON.parse(ev.data);
      logLine("", l.stream, l.at, l.text);
    });
    es.addEventListener("diff", ev => {
      const seq = +ev.lastEventId || 0;
      if (seq && seq <= lastSeq) return;
      lastSeq = seq || lastSeq;
      const d = JSON.parse(ev.data);
      if (task && d.stat) task.diff = d.stat;
      // The stream carries the patch: the store may not have recorded it yet.
      if (typeof d.patch === "string") { diffText = d.patch; drawDiff(); } else loadDiff();
    });
  }

  btnCancel.addEventListener("click", () => act("/cancel", null, "Cancel"));
  btnRetry.addEventListener("click", () => act("/retry", null, "Retry"));
  $("btn-inbox").addEventListener("click", loadInbox);
  $("btn-approve").addEventListener("click", () => act("/messages", { text: "/approve" }, "Approval"));
  $("followup").addEventListener("submit", async e => {
    e.preventDefault();
    const ta = $("followup-text");
    const text = ta.value.trim();
    if (!text) { ta.focus(); return; }
    if (await act("/messages", { text }, "Follow-up")) ta.value = "";
  });
  $("answer-form").addEventListener("submit", async e => {
    e.preventDefault();
    const ta = $("answer-text");
    const text = ta.value.trim();
    if (!text) { ta.focus(); return; }
    if (await act("/messages", { text }, "Answer")) ta.value = "";
  });
  for (const r of document.querySelectorAll("input[name=layout]")) r.addEventListener("change", drawDiff);
  setInterval(() => { const e = $("elapsed"); if (e && task && NS.active(task.state)) e.textContent = NS.elapsed(task); }, 1000);

  (async () => {
    const s = await NS.getSession();
    if (s && s.principal && s.principal.role !== "admin") {
      canAct = false;
      for (const b of [btnCancel, btnRetry, btnSend]) b.title = "Your token is read-only";
    }
    try {
      task = await NS.api(base);
    } catch (e) {
      $("title").textContent = e.status === 404 ? "No task " + id : "Task " + id;
      stateEl.textContent = e.message;
      return;
    }
    render();
    loadDiff();
    stream();
    document.body.dataset.ready = "true";
  })();
})();
