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
