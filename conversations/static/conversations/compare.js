// A preset comparison's page: follows its progress until it ends.
(() => {
  const box = document.getElementById("compare-progress");
  if (!box) return;
  const running = (state) => state === "queued" || state === "running";
  async function poll() {
    try {
      const response = await fetch(box.dataset.url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const report = await response.json();
      document.getElementById("compare-bar").value = report.done;
      document.getElementById("compare-done").textContent = report.done;
      const state = document.getElementById("compare-state");
      state.textContent = report.state_label;
      state.className = "status status-" + (report.state === "done" ? "replied" : running(report.state) ? "pending" : "failed");
      document.getElementById("compare-report").innerHTML = report.table; // rendered and escaped by Django
      if (!running(report.state)) {
        const cancel = document.getElementById("compare-cancel");
        if (cancel) cancel.remove();
        return;
      }
    } catch (error) { /* try again below */ }
    setTimeout(poll, 1000);
  }
  const state = document.getElementById("compare-state").className;
  if (state.includes("status-pending")) setTimeout(poll, 500);
})();
