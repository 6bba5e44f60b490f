// Account page: revoke one session with DELETE /sessions/{id}. Plain
// JavaScript, no build step; served as a file because the page's CSP
// allows no inline scripts.
"use strict";
function showError(msg) {
  const el = document.getElementById("account-error");
  if (el) { el.textContent = msg; el.hidden = false; }
}
document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button.revoke-session");
  if (!btn) return;
  btn.disabled = true;
  const res = await fetch("/sessions/" + encodeURIComponent(btn.dataset.id), {
    method: "DELETE", credentials: "same-origin", headers: { "Accept": "application/json" },
  });
  if (res.status === 204) {
    const row = btn.closest("tr");
    if (row && row.querySelector("em")) { window.location.assign("/login"); return; }
    if (row) row.remove();
  } else {
    btn.disabled = false;
    showError("Could not sign out that session (" + res.status + ").");
  }
});
