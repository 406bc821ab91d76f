// Nightshift board: helpers shared by the pages. Plain JavaScript, no
// build step. Everything that comes from the server is put in the page
// with textContent, never as HTML.
"use strict";

const NS = (() => {
  let session = null;

  // api fetches a REST path with the session cookie, adds the CSRF token on
  // state-changing requests and turns error answers into exceptions carrying
  // the server's {"error": "..."} message.
  async function api(path, opts = {}) {
    const headers = Object.assign({ "Accept": "application/json" }, opts.headers || {});
    const method = (opts.method || "GET").toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      const s = await getSession();
      if (s && s.csrf_token) headers["X-CSRF-Token"] = s.csrf_token;
    }
    let body = opts.body;
    if (body !== undefined && typeof body !== "string") {
      body = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    }
    const resp = await fetch(path, { method, headers, body, credentials: "same-origin" });
    if (resp.status === 401) {
      location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
      throw new Error("not logged in");
    }
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try { const e = await resp.json(); if (e && e.error) msg = e.error; } catch (_) { /* not JSON */ }
      const err = new Error(msg);
      err.status = resp.status;
      throw err;
    }
    if (opts.raw) return resp;
    const type = resp.headers.get("Content-Type") || "";
    if (resp.status === 204) return null;
    return type.includes("json") ? resp.json() : resp.text();
  }

  async function getSession() {
    if (!session) {
      session = fetch("/api/v1/session", { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(r => r.ok ? r.json() : null).catch(() => null);
    }
    return session;
  }

  // el builds an element: el("a", {href: u, class: "x"}, "text", child...).
  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) {
      if (k === undefined || k === null || k === false) continue;
      n.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return n;
  }

  // column maps a task state to its board column.
  function column(state) {
    switch (state) {
      case "queued": return "queued";
      case "provisioning": case "running": case "testing": case "pushing": return "running";
      case "needs_input": return "needs_input";
      case "review": return "review";
      case "done": return "done";
      default: return "failed";
    }
  }

  function active(state) { return ["queued", "provisioning", "running", "testing", "pushing"].includes(state); }

  // trigger says where a task came from, with a link to it when known.
  function trigger(t) {
    const tg = t.target || {};
    const num = tg.number ? " #" + tg.number : (tg.id && tg.type !== "task" ? " " + tg.id : "");
    let label;
    switch (t.source) {
      case "github":
        if (t.kind === "ci.failed") label = "CI failure" + (tg.check ? " (" + tg.check + ")" : "") + num;
        else if (t.kind === "issue.labeled") label = "GitHub label" + num;
        else label = "GitHub comment" + num;
        break;
      case "linear": label = "Linear" + num; break;
      case "slack": label = "Slack"; break;
      case "automation": label = "Automation" + (t.automation ? " " + t.automation : ""); break;
      case "api": label = (t.actor && t.actor.login && t.actor.login !== "api") ? "API (" + t.actor.login + ")" : "API"; break;
      default: label = t.source || "unknown";
    }
    return { label, url: safeURL(tg.url) };
  }

  // safeURL allows only http(s) links from task data.
  function safeURL(u) {
    if (!u) return "";
    try { const p = new URL(u, location.href); return (p.protocol === "https:" || p.protocol === "http:") ? p.href : ""; }
    catch (_) { return ""; }
  }

  function repoName(repo) {
    if (!repo) return "";
    const r = repo.replace(/\.git$/, "").replace(/\/+$/, "");
    const parts = r.split(/[\/:]/).filter(Boolean);
    // A local path shows its last part; a URL its owner/name.
    return r.startsWith("/") ? parts.slice(-1).join("") : parts.slice(-2).join("/");
  }

  function duration(ms) {
    if (!(ms >= 0)) ms = 0;
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + String(s % 60).padStart(2, "0") + "s";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + String(m % 60).padStart(2, "0") + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  // elapsed is how long a task has been at it: until now while it works,
  // until its last change once it rests.
  function elapsed(t, now) {
    const start = Date.parse(t.created_at);
    const end = active(t.state) ? (now || Date.now()) : Date.parse(t.updated_at);
    return duration(end - start);
  }

  function tokens(t) {
    const u = t.usage || {};
    const n = (u.input_tokens || 0) + (u.output_tokens || 0);
    if (!n && !u.cost_usd) return "";
    let s = compact(n) + " tokens";
    if (u.cost_usd) s += " · $" + u.cost_usd.toFixed(u.cost_usd < 1 ? 3 : 2);
    return s;
  }

  function compact(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(1).replace(/\.0$/, "") + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1).replace(/\.0$/, "") + "k";
    return String(n);
  }

  function prLabel(u) {
    const m = /\/pull\/(\d+)/.exec(u || "");
    return m ? "PR #" + m[1] : "pull request";
  }

  function stateLabel(s) { return (s || "").replace("_", " "); }

  async function showWho() {
    const s = await getSession();
    const who = document.getElementById("who");
    if (!s || !who) return;
    const p = s.principal || {};
    who.textContent = s.open ? "open mode (loopback)" : (p.name || p.subject || "") + " · " + (p.role === "admin" ? "admin" : "read-only");
  }

  document.addEventListener("DOMContentLoaded", showWho);

  // planForReview reports whether t is a proposed plan waiting for a
  // person's approval (mode plan, needs input, a plan, not approved yet).
  function planForReview(t) { return !!t && t.mode === "plan" && t.state === "needs_input" && !t.plan_approved && !!t.plan; }

  // approvePlan approves t's plan the way an /approve comment does: it
  // posts "/approve" as the task's message; the change run starts with the
  // plan in its prompt.
  function approvePlan(id) {
    return api("/api/v1/tasks/" + encodeURIComponent(id) + "/messages", { method: "POST", body: { text: "/approve" } });
  }

  return { api, getSession, el, column, active, trigger, safeURL, repoName, duration, elapsed, tokens, compact, prLabel, stateLabel,
    planForReview, approvePlan };
})();
