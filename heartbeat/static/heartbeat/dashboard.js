// Refreshes the dashboard in place: fetches the server-rendered fragment every few seconds
// (paused while the tab is hidden) and swaps it in. No framework, nothing from the internet.
(function () {
  "use strict";
  const root = document.getElementById("pc-dashboard");
  const status = document.getElementById("pc-refresh-status");
  const companySelect = document.getElementById("pc-company");
  if (companySelect) {
    companySelect.addEventListener("change", function () {
      companySelect.form.submit();
    });
  }
  if (!root) {
    return;
  }
  const url = root.dataset.fragmentUrl;
  const interval = parseInt(root.dataset.refreshMs || "5000", 10);
  let inFlight = false;

  async function refresh() {
    if (inFlight || document.hidden) {
      return;
    }
    inFlight = true;
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.redirected || response.status === 403) {
        // The session ended: the full page shows the login form.
        window.location.reload();
        return;
      }
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      root.innerHTML = await response.text();
      status.textContent = "updated " + new Date().toLocaleTimeString();
      status.classList.remove("pc-warn");
    } catch (error) {
      status.textContent = "refresh failed (" + error.message + "), retrying";
      status.classList.add("pc-warn");
    } finally {
      inFlight = false;
    }
  }

  window.setInterval(refresh, interval);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
})();
