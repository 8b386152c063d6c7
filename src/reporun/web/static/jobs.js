// The jobs page refreshes itself while it may change (on its first page, or while a job it
// shows has not ended): every few seconds it fetches itself and swaps in the new list.
"use strict";
(function () {
  const EVERY_MS = 4000;
  function schedule() { setTimeout(refresh, EVERY_MS); }
  async function refresh() {
    const current = document.getElementById("jobs");
    if (!current || current.dataset.refresh !== "yes") return;
    if (document.hidden) { schedule(); return; }
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.ok && !response.redirected) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html").getElementById("jobs");
        if (fresh) current.replaceWith(fresh);
      }
    } catch (error) {
      // The server is away for a moment: try again later.
    }
    schedule();
  }
  schedule();
})();
