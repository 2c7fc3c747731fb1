// dllab review: keyboard-driven queue and decision pages. No build step, no libraries.
"use strict";
(function () {
  const token = document.querySelector('meta[name="review-token"]').content;
  const whoInput = document.getElementById("who");
  const WHO_KEY = "dllab-review-who";
  whoInput.value = localStorage.getItem(WHO_KEY) || document.querySelector('meta[name="review-who"]').content || "";
  whoInput.addEventListener("change", () => localStorage.setItem(WHO_KEY, whoInput.value.trim()));

  function api(path, body) {
    return fetch(path, {
      method: body === undefined ? "GET" : "POST",
      headers: {"X-Review-Token": token, "Content-Type": "application/json"},
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    }).then(async (r) => ({status: r.status, data: await r.json().catch(() => ({error: "the server's answer was not JSON"}))}));
  }

  function typing(ev) {
    const t = ev.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }

  // ----- render status, refreshed every few seconds
  const statusEl = document.getElementById("render-status");
  function showStatus(s) {
    statusEl.classList.toggle("bad", !!s.error);
    statusEl.textContent = s.error ? "re-rendering failed: " + s.error
      : s.running ? "re-rendering " + s.running + "…"
      : (s.pending && s.pending.length) ? "waiting to re-render " + s.pending.join(", ")
      : "PDFs up to date";
    statusEl.dataset.running = s.running || "";
    return s;
  }
  function poll() { return api("/api/status").then((r) => showStatus(r.data)); }
  setInterval(poll, 3000);

  // ----- help
  const help = document.getElementById("help");
  document.addEventListener("keydown", (ev) => {
    if (typing(ev)) return;
    if (ev.key === "?") { help.hidden = !help.hidden; ev.preventDefault(); }
    else if (ev.key === "Escape") { help.hidden = true; }
  });

  // ----- queue
  const rows = Array.from(document.querySelectorAll("#queue tr.row"));
  if (rows.length) {
    let at = Math.max(0, rows.findIndex((r) => r.classList.contains("pending")));
    const mark = () => rows.forEach((r, i) => r.classList.toggle("selected", i === at));
    mark();
    rows.forEach((r, i) => r.addEventListener("click", (ev) => {
      if (ev.target.tagName !== "A") { at = i; mark(); location.href = r.dataset.href; }
    }));
    document.addEventListener("keydown", (ev) => {
      if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      if (ev.key === "j" || ev.key === "ArrowDown") { at = Math.min(rows.length - 1, at + 1); mark(); rows[at].scrollIntoView({block: "nearest"}); ev.preventDefault(); }
      else if (ev.key === "k" || ev.key === "ArrowUp") { at = Math.max(0, at - 1); mark(); rows[at].scrollIntoView({block: "nearest"}); ev.preventDefault(); }
      else if (ev.key === "Enter" || ev.key === "o") { location.href = rows[at].dataset.href; ev.preventDefault(); }
    });
  }
  const search = document.getElementById("search");
  if (search) document.addEventListener("keydown", (ev) => {
    if (!typing(ev) && ev.key === "/") { search.focus(); search.select(); ev.preventDefault(); }
  });

  // ----- decision
  const form = document.getElementById("decide");
  if (form) {
    const points = document.getElementById("points");
    const comment = document.getElementById("comment");
    const err = document.getElementById("form-error");
    const conflict = document.getElementById("conflict");
    const d = form.dataset;
    let pendingBody = null;
    // What the TA typed is kept in the browser until it is saved: a reload, a crash of the server or
    // of the browser loses nothing.
    const draftKey = "dllab-review-draft:" + location.host + ":" + d.kind + "/" + d.sid + "/" + d.key;
    const typed = () => ({points: points ? points.value : "", comment: comment.value});
    const saved0 = JSON.stringify(typed());
    try {
      const draft = JSON.parse(localStorage.getItem(draftKey) || "null");
      if (draft && JSON.stringify({points: draft.points, comment: draft.comment}) !== saved0) {
        if (points) points.value = draft.points;
        comment.value = draft.comment;
        err.textContent = "";
        document.getElementById("draft-note").hidden = false;
      }
    } catch (e) { localStorage.removeItem(draftKey); }
    const keepDraft = () => {
      const now = typed();
      if (JSON.stringify(now) === saved0) localStorage.removeItem(draftKey);
      else localStorage.setItem(draftKey, JSON.stringify(now));
    };
    if (points) points.addEventListener("input", keepDraft);
    comment.addEventListener("input", keepDraft);

    function save(action, base) {
      err.textContent = "";
      if (!whoInput.value.trim()) { whoInput.value = whoInput.value || "TA"; }
      localStorage.setItem(WHO_KEY, whoInput.value.trim());
      if (action === "set" && points && points.value.trim() === "") {
        if (d.manual === "yes") { err.textContent = "Give the points (0 to " + d.max + ")."; points.focus(); return; }
        action = "keep";
      }
      const body = {kind: d.kind, student_id: d.sid, key: d.key, action: action,
                    points: action === "set" ? points.value.trim() : null,
                    comment: comment.value, who: whoInput.value.trim(), base: base === undefined ? d.base : base};
      pendingBody = body;
      api("/api/decide", body).then((r) => {
        if (r.status === 200) {
          localStorage.removeItem(draftKey);
          d.base = r.data.saved.id;
          document.getElementById("current").textContent = "Saved.";
          location.href = d.next || "/";
        } else if (r.status === 409) {
          const c = r.data.conflict;
          document.getElementById("conflict-who").textContent = c.who + " (" + c.when.slice(0, 19).replace("T", " ") + " UTC)";
          document.getElementById("conflict-what").textContent =
            (c.action === "set" ? c.points + " points" : c.action) + (c.comment ? " — “" + c.comment + "”" : "");
          conflict.dataset.current = c.id;
          conflict.hidden = false;
        } else {
          err.textContent = r.data.error || ("the server answered " + r.status);
        }
      }).catch((e) => { err.textContent = "not saved: the server cannot be reached (" + e + "); your entry is still here"; });
    }
    const main = d.kind === "item" ? "set" : "reviewed";
    form.addEventListener("submit", (ev) => { ev.preventDefault(); save(main); });
    const keep = document.getElementById("keep");
    if (keep) keep.addEventListener("click", () => save("keep"));
    const clear = document.getElementById("clear");
    if (clear) clear.addEventListener("click", () => save("clear"));
    document.getElementById("conflict-mine").addEventListener("click", () => {
      if (pendingBody) save(pendingBody.action, conflict.dataset.current);
    });
    document.getElementById("conflict-theirs").addEventListener("click", () => location.reload());
    comment.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); save(main); }
      if (ev.key === "Escape") comment.blur();
    });
    if (points) points.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") points.blur();
      // points are digits: "?" opens the keys here too
      if (ev.key === "?") { ev.preventDefault(); help.hidden = !help.hidden; }
    });
    if (points) points.focus();  // a flag's page keeps the focus on the page: Enter marks it reviewed
    document.addEventListener("keydown", (ev) => {
      if (typing(ev) || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const go = (id) => { const a = document.getElementById(id); if (a) location.href = a.href; };
      const k = ev.key;
      if (k === "e" && points) { points.focus(); points.select(); }
      else if (k === "c") { comment.focus(); }
      else if (k === "f" && points) { points.value = d.max; points.focus(); }
      else if (k === "0" && points) { points.value = "0"; points.focus(); }
      else if (k === "K" && keep) { save("keep"); }
      else if (k === "r" && d.kind === "flag") { save("reviewed"); }
      else if (k === "Enter") { save(main); }
      else if (k === "n" || k === "ArrowRight") { go("next"); }
      else if (k === "p" || k === "ArrowLeft") { go("prev"); }
      else if (k === "u") { location.href = document.querySelector(".steps a").href; }
      else return;
      ev.preventDefault();
    });
  }

  // ----- release
  const release = document.getElementById("release");
  if (release) {
    const out = document.getElementById("release-status");
    release.addEventListener("click", () => {
      release.disabled = true;
      out.textContent = "releasing: re-rendering every PDF, the gradebook and the class summary…";
      api("/api/release", {}).then(() => {
        const wait = setInterval(() => poll().then((s) => {
          if (!s.release_running) {
            clearInterval(wait);
            release.disabled = false;
            out.textContent = s.error ? "release failed: " + s.error : "released at " + s.released_at;
            out.id = "release-status";
            out.dataset.done = s.error ? "error" : "yes";
          }
        }), 1000);
      });
    });
  }
})();
