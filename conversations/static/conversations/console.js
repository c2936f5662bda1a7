// Copy buttons: <button data-copy="#input-id">.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  if (!field) return;
  field.select();
  const done = () => { button.dataset.copied = "true"; button.textContent = "✔"; };
  if (navigator.clipboard) navigator.clipboard.writeText(field.value).then(done, () => document.execCommand("copy") && done());
  else if (document.execCommand("copy")) done();
});

// The channel page's Preview button: the notice from the unsaved form, in place.
// Without JavaScript the button posts the form to the preview page instead.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-notice-preview]");
  if (!button || !window.fetch) return;
  event.preventDefault();
  const form = button.form;
  fetch(button.formAction, {method: "POST", body: new FormData(form), headers: {"X-Preview": "fragment"},
                            credentials: "same-origin"})
    .then((response) => response.ok ? response.text() : Promise.reject(response.status))
    .then((html) => { document.querySelector(button.dataset.noticePreview).outerHTML = html; })
    .catch(() => form.requestSubmit(button));
});

// "Test these settings" on the backend form: posts the unsaved form to the test view and
// shows the result under the button (without JavaScript it opens in a new tab).
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-test-settings]");
  if (!button || !button.form) return;
  event.preventDefault();
  const out = document.getElementById("settings-test-result");
  const data = new FormData(button.form);
  data.set("_fragment", "1");
  button.disabled = true;
  out.textContent = button.dataset.testing;
  try {
    const response = await fetch(button.getAttribute("formaction"), {method: "POST", body: data, credentials: "same-origin"});
    if (!response.ok) throw new Error(String(response.status));
    out.innerHTML = await response.text();  // rendered (and escaped) by the server
  } catch (error) {
    out.textContent = button.dataset.failed;
  } finally {
    button.disabled = false;
  }
});

// "Use this model" in a test of unsaved settings: fills the form's model field.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-use-model]");
  const field = button && document.getElementById("id_model");
  if (!field) return;
  field.value = button.dataset.useModel;
  field.focus();
});

// A model download's progress bar: polls its progress until it is done or failed.
document.querySelectorAll(".pull-progress[data-polling]").forEach((box) => {
  const show = (pull) => {
    box.querySelector("progress").value = pull.percent;
    box.querySelector(".pull-percent").textContent = `${pull.percent} %`;
    box.querySelector(".pull-size").textContent = pull.size;
    box.querySelector(".pull-step").textContent = pull.step;
    const status = box.querySelector(".pull-status");
    status.textContent = pull.status_label;
    status.className = `pull-status status status-${pull.status === "done" ? "replied" : pull.status === "failed" ? "failed" : "pending"}`;
    const error = box.querySelector(".pull-error");
    error.textContent = pull.error;
    error.hidden = !pull.error;
    box.querySelector(".pull-done").hidden = pull.status !== "done";
  };
  const poll = async () => {
    try {
      const response = await fetch(box.dataset.progressUrl, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (!response.ok) return;
      const pull = await response.json();
      show(pull);
      if (pull.finished) { box.removeAttribute("data-polling"); return; }
    } catch (error) { /* a dropped poll; the next one tries again */ }
    setTimeout(poll, 1000);
  };
  poll();
});

// Lists that become cards on a phone: each cell carries its column's name (see console.css).
document.querySelectorAll("#result_list").forEach((table) => {
  const labels = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
  table.querySelectorAll("tbody tr").forEach((row) => {
    [...row.children].forEach((cell, index) => {
      if (labels[index]) cell.dataset.label = labels[index];
    });
  });
});
