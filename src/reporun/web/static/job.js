// A job's page: its log, live, from GET /v1/jobs/{id}/events (Server-Sent Events). The browser's
// EventSource reconnects by itself after a drop and sends Last-Event-ID, so the server resumes
// where the log was; an ended job whose log was all sent answers 204, and the browser stops.
// ANSI colour codes become spans. Text is added in batches, and at most MAX_CHARS of it is kept
// on the page (the oldest goes first), so a huge log never freezes the tab.
"use strict";
(function () {
  const log = document.getElementById("log");
  if (!log) return;
  const state = document.getElementById("log-state");
  const cut = document.getElementById("log-cut");
  const MAX_CHARS = 1 << 20;
  const FLUSH_MS = 60;
  let pending = "";
  let shown = 0;
  let timer = null;
  let ended = false;
  const ansi = newAnsi();

  function say(text) { if (state) state.textContent = text; }

  function atBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 24; }

  function flush() {
    timer = null;
    if (!pending) return;
    const follow = atBottom();
    const text = pending;
    pending = "";
    const piece = ansi.render(text);
    shown += piece.textContent.length; // as the trimming below counts: escapes not shown
    log.appendChild(piece);
    while (shown > MAX_CHARS && log.firstChild) {
      const first = log.firstChild;
      shown -= first.textContent.length;
      log.removeChild(first);
      if (cut) cut.hidden = false;
    }
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function add(text) {
    pending += text;
    if (pending.length > MAX_CHARS) {
      // Far more than is kept arrived at once: only its end is shown.
      pending = pending.slice(pending.length - MAX_CHARS);
      if (cut) cut.hidden = false;
    }
    if (timer === null) timer = setTimeout(flush, FLUSH_MS);
  }

  function reset() {
    pending = "";
    shown = 0;
    log.textContent = "";
    ansi.clear();
  }

  function showStatus(job) {
    const fields = document.querySelectorAll("[data-field]");
    for (const el of fields) {
      const name = el.dataset.field;
      if (!(name in job)) continue;
      const value = job[name];
      if (name === "status") {
        el.textContent = value;
        el.className = "badge status-" + value;
      } else if (name === "reason") {
        el.textContent = value || "";
        el.hidden = !value;
      } else if (name === "log_truncated") {
        el.hidden = !value;
      } else if (name.endsWith("_at")) {
        el.textContent = value ? value.replace("T", " ").replace(/\.\d+/, "").replace(/(Z|\+00:00)$/, " UTC") : "—";
      } else if (name.endsWith("_seconds")) {
        el.textContent = value === null ? "—" : value.toFixed(value < 10 ? 2 : 1) + " s";
      } else {
        el.textContent = value === null || value === "" ? "—" : String(value);
      }
    }
    const finished = !["queued", "running"].includes(job.status);
    for (const el of document.querySelectorAll("[data-show]")) {
      el.hidden = (el.dataset.show === "finished") !== finished;
    }
  }

  function finish() {
    ended = true;
    flush();
    say("ended");
    source.close();
  }

  const source = new EventSource(log.dataset.events);
  source.addEventListener("open", () => { if (!ended) say("live"); });
  source.addEventListener("error", () => {
    if (ended) return;
    say(source.readyState === EventSource.CLOSED ? "ended" : "reconnecting…");
  });
  source.addEventListener("log", (event) => add(JSON.parse(event.data)));
  source.addEventListener("status", (event) => showStatus(JSON.parse(event.data)));
  source.addEventListener("reset", () => reset());
  source.addEventListener("end", () => finish());
  window.reporunLog = { source: source, flush: flush };

  // ANSI SGR (colours, bold, ...) as spans; other escape sequences are dropped. The state and
  // an escape cut in two carry over from one piece of text to the next.
  function newAnsi() {
    let carry = "";
    let style = {};
    const ESC = /\x1b(?:\[([0-9;:?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])/g;

    function apply(params) {
      const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => parseInt(p || "0", 10));
      for (let i = 0; i < codes.length; i++) {
        const c = codes[i];
        if (c === 0) style = {};
        else if (c === 1) style.b = true;
        else if (c === 2) style.dim = true;
        else if (c === 3) style.i = true;
        else if (c === 4) style.u = true;
        else if (c === 22) { delete style.b; delete style.dim; }
        else if (c === 23) delete style.i;
        else if (c === 24) delete style.u;
        else if (c >= 30 && c <= 37) { style.fg = c - 30; delete style.fgRgb; }
        else if (c >= 90 && c <= 97) { style.fg = c - 90 + 8; delete style.fgRgb; }
        else if (c === 39) { delete style.fg; delete style.fgRgb; }
        else if (c >= 40 && c <= 47) { style.bg = c - 40; delete style.bgRgb; }
        else if (c >= 100 && c <= 107) { style.bg = c - 100; delete style.bgRgb; }
        else if (c === 49) { delete style.bg; delete style.bgRgb; }
        else if (c === 38 || c === 48) {
          const fg = c === 38;
          let rgb = null;
          if (codes[i + 1] === 5 && i + 2 < codes.length) {
            rgb = xterm(codes[i + 2]);
            i += 2;
          } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
            rgb = [codes[i + 2], codes[i + 3], codes[i + 4]];
            i += 4;
          }
          if (rgb && fg && rgb[3] !== undefined) { style.fg = rgb[3]; delete style.fgRgb; }
          else if (rgb && !fg && rgb[3] !== undefined && rgb[3] < 8) { style.bg = rgb[3]; delete style.bgRgb; }
          else if (rgb) { style[fg ? "fgRgb" : "bgRgb"] = rgb.slice(0, 3); if (fg) delete style.fg; else delete style.bg; }
        }
      }
    }

    function xterm(n) {
      if (n < 16) return [0, 0, 0, n];
      if (n < 232) {
        n -= 16;
        const level = (v) => (v === 0 ? 0 : 55 + v * 40);
        return [level(Math.floor(n / 36)), level(Math.floor(n / 6) % 6), level(n % 6)];
      }
      const grey = 8 + (n - 232) * 10;
      return [grey, grey, grey];
    }

    function span(text, into) {
      if (!text) return;
      const keys = Object.keys(style);
      if (!keys.length) { into.appendChild(document.createTextNode(text)); return; }
      const el = document.createElement("span");
      const classes = [];
      if (style.b) classes.push("b");
      if (style.dim) classes.push("dim");
      if (style.i) classes.push("i");
      if (style.u) classes.push("u");
      if (style.fg !== undefined) classes.push("fg" + style.fg);
      if (style.bg !== undefined) classes.push("bg" + style.bg);
      el.className = classes.join(" ");
      if (style.fgRgb) el.style.color = "rgb(" + style.fgRgb.join(",") + ")";
      if (style.bgRgb) el.style.backgroundColor = "rgb(" + style.bgRgb.join(",") + ")";
      el.textContent = text;
      into.appendChild(el);
    }

    return {
      clear() { carry = ""; style = {}; },
      render(text) {
        text = carry + text;
        carry = "";
        const escape = text.lastIndexOf("\x1b");
        if (escape !== -1 && text.length - escape < 64) {
          const tail = text.slice(escape);
          ESC.lastIndex = 0;
          const match = ESC.exec(tail);
          if (!match || match.index !== 0) { carry = tail; text = text.slice(0, escape); }
        }
        const out = document.createDocumentFragment();
        let last = 0;
        ESC.lastIndex = 0;
        let match;
        while ((match = ESC.exec(text)) !== null) {
          span(text.slice(last, match.index).replace(/\r(?!\n)/g, ""), out);
          if (match[2] === "m") apply(match[1] || "");
          last = ESC.lastIndex;
        }
        span(text.slice(last).replace(/\r(?!\n)/g, ""), out);
        const piece = document.createElement("span");
        piece.appendChild(out);
        return piece;
      },
    };
  }
})();
