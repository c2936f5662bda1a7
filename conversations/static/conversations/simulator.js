// The simulator page: sends what a member types, polls the chat as LINE shows it.
// Everything from the server is put in with textContent, never as HTML.
(() => {
  const configNode = document.getElementById("sim-config");
  if (!configNode) return;
  const config = JSON.parse(configNode.textContent);
  const L = config.labels;
  const timeline = document.getElementById("sim-timeline");
  const callsTable = document.getElementById("sim-calls");
  const form = document.getElementById("sim-composer");
  const errorBox = document.getElementById("sim-error");
  const openPrompts = new Map(); // answer id -> rendered prompt (kept across redraws)
  // Simulated event id -> the text typed on this page. The bot did not store some of these
  // (group memory, opt-out) and nothing on the server keeps them: shown while the page is open.
  const typed = new Map();
  // Message id -> its thumbnail link, kept across redraws: each load of a thumbnail is an
  // audited view of the photo (and never cached), so it is fetched once per page.
  const thumbnails = new Map();
  let fastUntil = 0;
  let timer = null;
  let lastSignature = "";

  const csrf = () => (document.querySelector("[name=csrfmiddlewaretoken]") || {}).value || "";
  const el = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  };
  const time = (iso) => new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  const fill = (template, values) => template.replace(/%\((\w+)\)s/g, (_, key) => values[key] ?? "");

  function userItem(item) {
    const unstored = item.status === "unstored";
    const row = el("li", "sim-row sim-user" + (unstored ? " sim-unstored" : ""));
    if (item.id) row.dataset.message = item.id;
    if (item.event) row.dataset.event = item.event;
    row.append(el("div", "sim-name", item.speaker));
    const bubble = el("div", "sim-bubble sim-user-bubble" + (item.type !== "text" ? " sim-media-bubble" : ""));
    bubble.dataset.type = item.type;
    const text = item.text || (unstored && typed.get(String(item.event))) || "";
    if (unstored && !text) {
      bubble.classList.add("sim-text-not-kept");
      bubble.textContent = L.unstored_text;
    } else if (item.mentions_bot && text.startsWith("@")) {
      const handle = "@" + config.bot;
      if (text.startsWith(handle)) {
        bubble.append(el("span", "sim-mention-tag", handle), document.createTextNode(text.slice(handle.length)));
      } else bubble.textContent = text;
    } else bubble.textContent = text;
    if (item.media && item.media.thumbnail) bubble.replaceChildren(thumbnail(item));
    else if (item.media) {
      const link = el("a", "sim-media-file", L.audio_file);
      link.href = item.media.file;
      link.target = "_blank";
      link.rel = "noopener";
      bubble.append(el("br"), link);
    }
    row.append(bubble);
    const meta = el("div", "sim-meta", time(item.at));
    if (unstored) {
      meta.append(" · ", el("span", "status status-unstored", fill(L.unstored, { reason: item.skip_reason_label })));
    } else if (item.status === "skipped") {
      meta.append(" · ", el("span", "status status-skipped",
        fill(L.skipped, { reason: item.skip_reason_label || item.skip_reason })));
    } else if (item.status === "failed") {
      meta.append(" · ", el("span", "status status-failed", item.status_label));
    }
    row.append(meta);
    return row;
  }

  function thumbnail(item) {
    if (thumbnails.has(item.id)) return thumbnails.get(item.id);
    const link = el("a", "sim-thumbnail");
    link.href = item.media.file;
    link.target = "_blank";
    link.rel = "noopener";
    const image = el("img");
    image.src = item.media.thumbnail;
    image.alt = L.photo;
    link.append(image);
    thumbnails.set(item.id, link);
    return link;
  }

  function botItem(item) {
    const row = el("li", "sim-row sim-bot");
    if (item.answer_id) row.dataset.answer = item.answer_id;
    row.append(avatar());
    const body = el("div", "sim-bot-body");
    body.append(el("div", "sim-name", config.bot));
    for (const bubble of item.bubbles) {
      const node = el("div", "sim-bubble sim-bot-bubble");
      if (bubble.quote) {
        const quote = el("div", "sim-quote");
        quote.title = L.quote;
        if (bubble.quote.speaker) quote.append(el("strong", null, bubble.quote.speaker + " "));
        quote.append(document.createTextNode(bubble.quote.text));
        node.append(quote);
      }
      node.append(el("div", "sim-bubble-text", bubble.text));
      body.append(node);
    }
    const meta = el("div", "sim-meta");
    meta.append(el("span", "sim-via sim-via-" + item.via, L[item.via] || item.via), " " + time(item.at));
    // The bot's own texts, which no model wrote: the privacy notice (follow, join) and the non-text answer.
    if (item.message_type === "notice") {
      row.classList.add("sim-notice");
      meta.append(" · ", el("span", "badge badge-notice", L.notice));
    } else if (item.message_type === "non_text_reply") {
      meta.append(" · ", el("span", "badge badge-notice", L.non_text_reply));
    }
    body.append(meta);
    row.append(body);
    return row;
  }

  const avatar = () => el("div", "sim-avatar", (config.bot || "?").trim().charAt(0).toUpperCase());

  function loadingItem() {
    const row = el("li", "sim-row sim-bot sim-loading");
    row.append(avatar());
    const bubble = el("div", "sim-bubble sim-bot-bubble");
    bubble.title = L.loading;
    const dots = el("span", "sim-dots");
    dots.append(el("i"), el("i"), el("i"));
    bubble.append(dots);
    row.append(bubble);
    return row;
  }

  function lineErrorItem(item) {
    const row = el("li", "sim-system sim-line-error",
      fill(L.line_error, { status: item.status, endpoint: item.endpoint, error: item.error }));
    if (item.details.length) row.title = item.details.join("\n");
    return row;
  }

  function answerItem(item) {
    const row = el("li", "sim-answer");
    row.dataset.answer = item.id;
    const figures = el("div", "sim-answer-figures");
    const parts = [];
    if (item.latency_ms !== null) parts.push(el("span", "sim-latency", item.latency_ms + " ms"));
    if (item.backend) {
      const backend = el("span", null, item.backend + " ");
      backend.append(el("span", "badge " + (item.local ? "badge-local" : "badge-cloud"), item.local ? L.local : L.cloud));
      parts.push(backend);
    }
    if (item.preset) parts.push(el("span", null, item.preset));
    if (item.prompt_tokens !== null || item.completion_tokens !== null) {
      parts.push(el("span", null, `${item.prompt_tokens ?? "?"} + ${item.completion_tokens ?? "?"} ${L.tokens}`));
    }
    if (!item.backend) parts.push(el("span", "status status-failed", L.apology));
    if (item.status === "pending" && !item.delivered_calls) parts.push(el("span", "status status-pending", L.not_delivered));
    parts.forEach((part, index) => { if (index) figures.append(" · "); figures.append(part); });
    row.append(figures);
    if (item.hint) row.append(el("div", "sim-hint", item.hint));
    if (item.error && !item.hint) row.append(el("div", "sim-hint", item.error));
    if (config.prompts) row.append(promptDetails(item.id));
    return row;
  }

  // Under the bot's own text: nothing once LINE has it (its bubble is marked), else why not.
  function ownTextItem(item) {
    if (item.status !== "skipped" && item.status !== "failed") return null;
    const label = item.type === "notice" ? L.notice_not_sent : L.non_text_reply;
    const reason = item.skip_reason || item.error || item.status_label;
    return el("li", "sim-system sim-own-text", reason ? `${label}: ${reason}` : label);
  }

  function promptDetails(answerId) {
    const details = el("details", "sim-prompt");
    details.append(el("summary", null, L.prompt));
    const body = el("div", "sim-prompt-body");
    details.append(body);
    if (openPrompts.has(answerId)) {
      details.open = true;
      body.append(openPrompts.get(answerId).cloneNode(true));
    }
    details.addEventListener("toggle", async () => {
      if (!details.open) { openPrompts.delete(answerId); return; }
      if (body.childNodes.length) return;
      const response = await fetch(config.prompt.replace("{id}", answerId), { headers: { Accept: "application/json" } });
      const rendered = renderPrompt(await response.json());
      openPrompts.set(answerId, rendered);
      body.replaceChildren(rendered.cloneNode(true));
    });
    return details;
  }

  function renderPrompt(data) {
    const box = el("div", "sim-prompt-content");
    if (data.backend) {
      const line = el("p", null, `${L.backend}: ${data.backend.name} (${data.backend.kind}: ${data.backend.model}) `);
      line.append(el("span", "badge " + (data.backend.local ? "badge-local" : "badge-cloud"),
        data.backend.local ? L.local : L.cloud));
      if (data.masked) line.append(" ", el("span", "badge badge-cloud", L.masked));
      box.append(line);
    }
    if (data.params) {
      box.append(el("p", "sim-params", `${L.params}: ` + Object.entries(data.params).map(([k, v]) => `${k} ${v}`).join(" · ")));
    }
    const turns = el("ol", "sim-turns");
    for (const turn of data.turns) {
      const item = el("li", "sim-turn sim-turn-" + turn.role);
      item.append(el("span", "sim-role", L[turn.role] || turn.role), el("pre", null, turn.content));
      turns.append(item);
    }
    box.append(turns);
    for (const note of data.notes) box.append(el("p", "help", note));
    return box;
  }

  function render(data) {
    const signature = JSON.stringify([data.items, data.calls]);
    if (signature === lastSignature) return;
    lastSignature = signature;
    const nearBottom = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 80;
    const rows = [];
    for (const item of data.items) {
      if (item.kind === "user") rows.push(userItem(item));
      else if (item.kind === "bot") rows.push(botItem(item));
      else if (item.kind === "loading" && item.active) rows.push(loadingItem());
      else if (item.kind === "line_error") rows.push(lineErrorItem(item));
      else if (item.kind === "answer") rows.push(answerItem(item));
      else if (item.kind === "own_text") { const row = ownTextItem(item); if (row) rows.push(row); }
    }
    const loading = data.items.some((item) => item.kind === "loading" && item.active);
    if (data.waiting && !loading) rows.push(el("li", "sim-system sim-waiting", L.pending));
    if (!rows.length) rows.push(el("li", "sim-system", L.empty));
    timeline.replaceChildren(...rows);
    if (nearBottom || rows.length < 8) timeline.scrollTop = timeline.scrollHeight;
    if (callsTable) {
      callsTable.replaceChildren(...data.calls.slice().reverse().map((call) => {
        const tr = el("tr", call.status >= 300 ? "sim-call-failed" : "");
        tr.append(el("td", null, time(call.at)), el("td", null, call.endpoint + (call.retry_key ? ` (${L.retry_key})` : "")),
          el("td", null, call.status + (call.error ? ` ${call.error}` : "")), el("td", null, call.messages || ""));
        return tr;
      }));
    }
    return data;
  }

  async function poll() {
    clearTimeout(timer);
    let busy = false;
    try {
      const response = await fetch(config.timeline, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const data = await response.json();
        render(data);
        busy = data.waiting || data.items.some((item) => item.kind === "loading" && item.active);
      }
    } catch (error) { /* the next poll tries again */ }
    timer = setTimeout(poll, busy || Date.now() < fastUntil ? 700 : 3000);
  }

  async function send(fields) {
    errorBox.textContent = "";
    const body = new FormData();
    body.append("member", document.getElementById("sim-member").value);
    for (const [key, value] of Object.entries(fields)) body.append(key, value);
    const mention = document.getElementById("sim-mention");
    if (mention && mention.checked) body.append("mention", "on");
    const button = document.getElementById("sim-send");
    button.disabled = true;
    try {
      const response = await fetch(config.send, { method: "POST", body, headers: { "X-CSRFToken": csrf() } });
      const answer = await response.json();
      if (!response.ok) { errorBox.textContent = answer.error || response.statusText; return false; }
      if (answer.event && fields.text) {
        // As the webhook got it: trimmed, after the bot's mention if there was one.
        const handle = mention && mention.checked ? "@" + config.bot + " " : "";
        typed.set(String(answer.event), handle + fields.text.trim());
      }
      fastUntil = Date.now() + 30000;
      return true;
    } finally {
      button.disabled = false;
      poll();
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("sim-text");
    if (!input.value.trim()) return;
    if (await send({ type: "text", text: input.value })) input.value = "";
    input.focus();
  });
  form.querySelectorAll("[data-type]").forEach((button) => {
    button.addEventListener("click", () => send({ type: button.dataset.type }));
  });
  // A photo or voice message: sent as soon as it is picked; the server checks it before storing it.
  form.querySelectorAll("[data-upload]").forEach((input) => {
    input.addEventListener("change", async () => {
      const file = input.files[0];
      if (!file) return;
      try { await send({ type: input.dataset.upload, content: file }); } finally { input.value = ""; }
    });
  });
  poll();
})();
