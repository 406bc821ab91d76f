// Nightshift board: unified diff parsing, a small syntax highlighter keyed
// by file extension, and unified and side-by-side renderers. Highlighting is
// per line (a string or comment spanning lines is not followed), which is
// enough for reading a diff.
"use strict";

const Diff = (() => {
  const { el } = NS;

  // parse splits a unified diff (git format) into files and hunks.
  function parse(text) {
    const files = [];
    let f = null, h = null, oldN = 0, newN = 0;
    const lines = text.split("\n");
    if (lines.length && lines[lines.length - 1] === "") lines.pop();
    for (const line of lines) {
      if (line.startsWith("diff --git ")) {
        const m = /^diff --git a\/(.+?) b\/(.+)$/.exec(line);
        f = { old: m ? m[1] : "", path: m ? m[2] : line.slice(11), hunks: [], added: 0, deleted: 0, status: "modified", binary: false };
        files.push(f); h = null;
        continue;
      }
      if (!f) continue;
      if (!h) {
        if (line.startsWith("new file")) f.status = "added";
        else if (line.startsWith("deleted file")) f.status = "deleted";
        else if (line.startsWith("rename to ")) { f.status = "renamed"; f.path = line.slice(10); }
        else if (line.startsWith("Binary files")) f.binary = true;
        else if (line.startsWith("+++ ") && line !== "+++ /dev/null") f.path = line.slice(4).replace(/^b\//, "");
      }
      const hm = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)$/.exec(line);
      if (hm) {
        oldN = +hm[1]; newN = +hm[2];
        h = { header: line, context: hm[3].trim(), lines: [] };
        f.hunks.push(h);
        continue;
      }
      if (!h) continue;
      const c = line[0], body = line.slice(1);
      if (c === "+") { h.lines.push({ t: "add", o: null, n: newN++, s: body }); f.added++; }
      else if (c === "-") { h.lines.push({ t: "del", o: oldN++, n: null, s: body }); f.deleted++; }
      else if (c === " " || line === "") { h.lines.push({ t: "ctx", o: oldN++, n: newN++, s: body }); }
      // "\ No newline at end of file" and anything else: skipped
    }
    return files;
  }

  const C_LIKE = "break case catch class const continue default do else enum export extends finally for function if import in instanceof let new return static super switch this throw try typeof var void while with yield async await of";
  const LANGS = {
    go: { kw: "break case chan const continue default defer else fallthrough for func go goto if import interface map package range return select struct switch type var nil true false iota", types: "string int int8 int16 int32 int64 uint uint8 uint16 uint32 uint64 uintptr byte rune bool error float32 float64 any complex64 complex128", line: "//", str: "\"'`" },
    js: { kw: C_LIKE + " true false null undefined from as", types: "", line: "//", str: "\"'`" },
    ts: { kw: C_LIKE + " true false null undefined from as interface type implements private public protected readonly declare namespace keyof", types: "string number boolean any unknown never void", line: "//", str: "\"'`" },
    py: { kw: "and as assert async await break class continue def del elif else except finally for from global if import in is lambda nonlocal not or pass raise return try while with yield None True False self", types: "int str float bool list dict set tuple bytes", line: "#", str: "\"'" },
    rs: { kw: "as async await break const continue crate dyn else enum extern false fn for if impl in let loop match mod move mut pub ref return self Self static struct super trait true type unsafe use where while", types: "i8 i16 i32 i64 i128 isize u8 u16 u32 u64 u128 usize f32 f64 bool char str String Vec Option Result Box", line: "//", str: "\"" },
    java: { kw: C_LIKE + " abstract boolean byte char double final float implements int interface long native package private protected public short synchronized throws transient volatile true false null", types: "String Integer Long Object List Map", line: "//", str: "\"'" },
    c: { kw: "auto break case char const continue default do double else enum extern float for goto if inline int long register restrict return short signed sizeof static struct switch typedef union unsigned void volatile while class namespace template typename public private protected virtual override nullptr true false new delete using", types: "size_t int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t bool std string vector", line: "//", str: "\"'" },
    sh: { kw: "if then else elif fi for while until do done case esac in function return exit export local readonly set unset echo cd", types: "", line: "#", str: "\"'" },
    yaml: { kw: "true false null yes no on off", types: "", line: "#", str: "\"'", yaml: true },
    json: { kw: "true false null", types: "", line: "", str: "\"" },
    css: { kw: "important", types: "", line: "", str: "\"'", css: true },
    sql: { kw: "select from where insert into values update set delete create table index on and or not null primary key references join left right inner outer group by order limit as if exists begin commit rollback", types: "text integer real blob", line: "--", str: "'", ci: true },
    md: { md: true }, plain: {},
  };
  const EXT = { go: "go", js: "js", mjs: "js", cjs: "js", jsx: "js", ts: "ts", tsx: "ts", py: "py", rs: "rs", java: "java", kt: "java",
    c: "c", h: "c", cc: "c", cpp: "c", hpp: "c", sh: "sh", bash: "sh", zsh: "sh", yml: "yaml", yaml: "yaml", json: "json",
    css: "css", scss: "css", sql: "sql", md: "md", markdown: "md", toml: "yaml", mod: "go" };
  const sets = new Map();
  function lang(path) {
    const base = path.split("/").pop();
    if (base === "Makefile" || base === "Dockerfile") return "sh";
    const ext = base.includes(".") ? base.split(".").pop().toLowerCase() : "";
    const name = EXT[ext] || "plain";
    if (!sets.has(name)) {
      const L = LANGS[name];
      const lower = s => L.ci ? s.toLowerCase() : s;
      sets.set(name, Object.assign({}, L, { kwSet: new Set(lower(L.kw || "").split(" ").filter(Boolean)), typeSet: new Set((L.types || "").split(" ").filter(Boolean)) }));
    }
    return sets.get(name);
  }

  // tokenize splits one line into [class, text] pairs.
  function tokenize(s, L) {
    const out = [];
    if (!L.kwSet) return [["", s]];
    if (L.md) {
      if (/^#{1,6} /.test(s)) return [["t-kw", s]];
      if (/^```/.test(s)) return [["t-com", s]];
    }
    let i = 0, plain = "";
    const push = (cls, text) => { if (plain) { out.push(["", plain]); plain = ""; } out.push([cls, text]); };
    while (i < s.length) {
      const ch = s[i];
      if (L.line && s.startsWith(L.line, i) && (L.line !== "#" || i === 0 || /\s/.test(s[i - 1]))) { push("t-com", s.slice(i)); break; }
      if (L.str && L.str.includes(ch)) {
        let j = i + 1;
        while (j < s.length && s[j] !== ch) j += s[j] === "\\" && ch !== "`" ? 2 : 1;
        push("t-str", s.slice(i, j + 1)); i = j + 1; continue;
      }
      if (/[0-9]/.test(ch) && (i === 0 || !/[\w$]/.test(s[i - 1]))) {
        const m = /^(0x[0-9a-fA-F_]+|[0-9][0-9_]*(\.[0-9_]+)?([eE][+-]?[0-9]+)?)/.exec(s.slice(i));
        push("t-num", m[0]); i += m[0].length; continue;
      }
      if (/[A-Za-z_$]/.test(ch)) {
        const m = /^[A-Za-z_$][\w$]*/.exec(s.slice(i));
        const w = m[0];
        const key = L.ci ? w.toLowerCase() : w;
        if (L.yaml && /^\s*$/.test(s.slice(0, i).replace(/^-\s*/, "").replace(/^\s*-\s/, "")) && s[i + w.length] === ":") push("t-fn", w);
        else if (L.kwSet.has(key)) push("t-kw", w);
        else if (L.typeSet.has(w)) push("t-type", w);
        else if (s[i + w.length] === "(") push("t-fn", w);
        else plain += w;
        i += w.length; continue;
      }
      plain += ch; i++;
    }
    if (plain) out.push(["", plain]);
    return out;
  }

  function code(s, L, cls) {
    const td = el("td", { class: "c" + (cls ? " " + cls : "") });
    for (const [c, text] of tokenize(s, L)) td.append(c ? el("span", { class: c }, text) : document.createTextNode(text));
    return td;
  }

  function num(n, cls) { return el("td", { class: "n" + (cls ? " " + cls : "") }, n === null || n === undefined ? "" : String(n)); }
  const mark = { add: "+", del: "−", ctx: " " };

  function unified(f, L) {
    const rows = [];
    for (const h of f.hunks) {
      rows.push(el("tr", { class: "hunk" }, el("td", { colspan: "4" }, h.header)));
      for (const l of h.lines) {
        rows.push(el("tr", { class: l.t === "ctx" ? "" : l.t },
          num(l.o), num(l.n), el("td", { class: "m", "aria-hidden": "true" }, mark[l.t]),
          code(l.s, L)));
      }
    }
    return el("table", { class: "code unified" },
      el("caption", { class: "visually-hidden" }, "Changes to " + f.path + ", unified"),
      el("tbody", {}, ...rows));
  }

  // split pairs each run of deletions with the additions that follow it.
  function split(f, L) {
    const rows = [];
    const side = (l, t) => l ? [num(t === "del" ? l.o : l.n, t), code(l.s, L, t)]
      : [el("td", { class: "n empty" }), el("td", { class: "c empty" })];
    for (const h of f.hunks) {
      rows.push(el("tr", { class: "hunk" }, el("td", { colspan: "4" }, h.header)));
      let i = 0;
      while (i < h.lines.length) {
        const l = h.lines[i];
        if (l.t === "ctx") {
          rows.push(el("tr", {}, num(l.o), code(l.s, L), num(l.n), code(l.s, L)));
          i++; continue;
        }
        const dels = [], adds = [];
        while (i < h.lines.length && h.lines[i].t === "del") dels.push(h.lines[i++]);
        while (i < h.lines.length && h.lines[i].t === "add") adds.push(h.lines[i++]);
        for (let k = 0; k < Math.max(dels.length, adds.length); k++) {
          rows.push(el("tr", {}, ...side(dels[k], "del"), ...side(adds[k], "add")));
        }
      }
    }
    return el("table", { class: "code split" },
      el("caption", { class: "visually-hidden" }, "Changes to " + f.path + ", side by side: old on the left, new on the right"),
      el("tbody", {}, ...rows));
  }

  // render fills the file list and the diff container.
  function render(text, filesList, container, layout) {
    const files = parse(text || "");
    filesList.replaceChildren();
    container.replaceChildren();
    if (!files.length) {
      container.append(el("p", { class: "muted" }, text && text.trim() ? "The diff could not be read." : "No diff yet."));
      return files;
    }
    files.forEach((f, i) => {
      const id = "file-" + i;
      filesList.append(el("li", {},
        el("a", { href: "#" + id }, f.path), " ",
        el("span", { class: "st" }, el("span", { class: "add" }, "+" + f.added), " ", el("span", { class: "del" }, "−" + f.deleted)),
        f.status !== "modified" ? el("span", { class: "muted" }, " (" + f.status + ")") : null));
      const L = lang(f.path);
      const body = f.binary ? el("p", { class: "muted" }, "Binary file") : (layout === "split" ? split(f, L) : unified(f, L));
      container.append(el("section", { class: "file", id, "aria-label": f.path, tabindex: "-1" },
        el("h3", {}, f.path), el("div", { class: "scroll" }, body)));
    });
    return files;
  }

  return { parse, tokenize, lang, render };
})();
