/* crm-bot sandbox page: Slack's mrkdwn and Block Kit (blocks, buttons, modal inputs) as DOM.
 *
 * Loaded before app.js; plain functions in the page's global scope. What they need from the
 * page (the state `S`, `userName`, `channelName`, `sendAction`) is defined in app.js and only
 * looked up when a block is rendered or clicked.
 */
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "html") node.innerHTML = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};
const escapeHtml = (s) => String(s ?? "").replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

/* ---------------------------------------------------------------- mrkdwn -------- */
const EMOJI = {
  white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌", warning: "⚠️", rotating_light: "🚨",
  bell: "🔔", moneybag: "💰", money_with_wings: "💸", dollar: "💵", euro: "💶", tada: "🎉",
  handshake: "🤝", arrow_right: "➡️", arrow_forward: "▶️", inbox_tray: "📥", outbox_tray: "📤",
  hourglass: "⌛", hourglass_flowing_sand: "⏳", clock3: "🕒", memo: "📝", pencil: "✏️",
  ticket: "🎫", admission_tickets: "🎟️", receipt: "🧾", chart_with_upwards_trend: "📈",
  bust_in_silhouette: "👤", busts_in_silhouette: "👥", office: "🏢", email: "📧", phone: "📞",
  telephone_receiver: "📞", star: "⭐", fire: "🔥", red_circle: "🔴", large_green_circle: "🟢",
  large_yellow_circle: "🟡", large_blue_circle: "🔵", white_circle: "⚪", no_entry: "⛔",
  no_entry_sign: "🚫", lock: "🔒", key: "🔑", mag: "🔍", link: "🔗", speech_balloon: "💬",
  eyes: "👀", wave: "👋", raised_hands: "🙌", thumbsup: "👍", "+1": "👍", thumbsdown: "👎",
  information_source: "ℹ️", question: "❓", exclamation: "❗", heavy_plus_sign: "➕",
  calendar: "📆", spiral_calendar_pad: "🗓️", package: "📦", briefcase: "💼", mega: "📣",
  loudspeaker: "📢", sparkles: "✨", trophy: "🏆", bar_chart: "📊", credit_card: "💳",
  leftwards_arrow_with_hook: "↩️", arrows_counterclockwise: "🔄", heavy_minus_sign: "➖",
  construction: "🚧", scales: "⚖️", card_index: "📇", clipboard: "📋", pushpin: "📌",
  bookmark: "🔖", label: "🏷️", new: "🆕", sos: "🆘", zap: "⚡", heart: "❤️", seedling: "🌱",
};
const emojify = (html) => html.replace(/:([a-z0-9_+\-]+):/g, (m, name) => EMOJI[name] || m);

const pad = (n) => String(n).padStart(2, "0");
function slackDate(ts, format, link) {
  const d = new Date(ts * 1000);
  const today = new Date();
  const yesterday = new Date(Date.now() - 86400000);
  const same = (a, b) => a.toDateString() === b.toDateString();
  const pretty = (style) => same(d, today) ? "Today" : same(d, yesterday) ? "Yesterday"
    : d.toLocaleDateString(undefined, style);
  const tokens = {
    date_num: `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`,
    date: d.toLocaleDateString(undefined, {month: "long", day: "numeric", year: "numeric"}),
    date_short: d.toLocaleDateString(undefined, {month: "short", day: "numeric", year: "numeric"}),
    date_long: d.toLocaleDateString(undefined, {weekday: "long", month: "long", day: "numeric", year: "numeric"}),
    date_pretty: pretty({month: "long", day: "numeric", year: "numeric"}),
    date_short_pretty: pretty({month: "short", day: "numeric", year: "numeric"}),
    date_long_pretty: pretty({weekday: "long", month: "long", day: "numeric", year: "numeric"}),
    time: d.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"}),
    time_secs: d.toLocaleTimeString(),
    ago: agoText(d),
  };
  const text = format.replace(/\{(\w+)\}/g, (m, t) => tokens[t] ?? m);
  return link ? `<a href="${escapeHtml(link)}" target="_blank" rel="noopener">${escapeHtml(text)}</a>`
    : escapeHtml(text);
}
function agoText(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const abs = Math.abs(s);
  const unit = abs < 60 ? [abs, "second"] : abs < 3600 ? [Math.round(abs / 60), "minute"]
    : abs < 86400 ? [Math.round(abs / 3600), "hour"] : [Math.round(abs / 86400), "day"];
  const words = `${unit[0]} ${unit[1]}${unit[0] === 1 ? "" : "s"}`;
  return s >= 0 ? `${words} ago` : `in ${words}`;
}

/* A control sequence <...> as HTML. */
function control(inner) {
  const bar = inner.indexOf("|");
  const target = bar >= 0 ? inner.slice(0, bar) : inner;
  const label = bar >= 0 ? inner.slice(bar + 1) : null;
  const unescape = (s) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  if (target.startsWith("@")) {
    const id = target.slice(1);
    const me = id === S.user ? " me" : "";
    return `<span class="mention${me}" data-user="${escapeHtml(id)}">@${escapeHtml(label || userName(id))}</span>`;
  }
  if (target.startsWith("#")) {
    const id = target.slice(1);
    return `<a class="mention channel-link" data-channel="${escapeHtml(id)}" href="#${escapeHtml(id)}">#${escapeHtml(label || channelName(id))}</a>`;
  }
  if (target.startsWith("!subteam^")) {
    return `<span class="mention">@${escapeHtml(label || target.slice(9))}</span>`;
  }
  if (target.startsWith("!date^")) {
    const parts = target.slice(6).split("^");
    const ts = Number(parts[0]);
    if (!Number.isFinite(ts)) return escapeHtml(unescape(label || ""));
    return slackDate(ts, parts[1] || "{date_short_pretty} {time}", parts[2]);
  }
  if (target.startsWith("!")) {
    return `<span class="mention">@${escapeHtml(label || target.slice(1))}</span>`;
  }
  const url = unescape(target);
  const text = label === null ? url.replace(/^mailto:|^tel:/, "") : unescape(label);
  const safe = /^(https?:|mailto:|tel:|\/)/i.test(url) ? url : "#";
  const internal = safe.startsWith(location.origin) || safe.startsWith("/archives/");
  return `<a href="${escapeHtml(safe)}"${internal ? ' class="permalink"' : ' target="_blank" rel="noopener"'}>${escapeHtml(text)}</a>`;
}

function mrkdwn(text) {
  const slots = [];
  const keep = (html) => `\u0000${slots.push(html) - 1}\u0000`;
  let s = String(text ?? "");
  s = s.replace(/```([\s\S]*?)```/g, (m, code) => keep(`<pre>${escapeHtml(unent(code))}</pre>`));
  s = s.replace(/`([^`\n]+)`/g, (m, code) => keep(`<code>${escapeHtml(unent(code))}</code>`));
  s = s.replace(/<([^<>\n]+)>/g, (m, inner) => keep(control(inner)));
  s = escapeHtml(unent(s));
  s = s.replace(/(^|[\s(\u0000])\*(?=\S)([^*\n]*?\S)\*(?=$|[\s).,!?:;\u0000])/gm, "$1<b>$2</b>");
  s = s.replace(/(^|[\s(\u0000])_(?=\S)([^_\n]*?\S)_(?=$|[\s).,!?:;\u0000])/gm, "$1<i>$2</i>");
  s = s.replace(/(^|[\s(\u0000])~(?=\S)([^~\n]*?\S)~(?=$|[\s).,!?:;\u0000])/gm, "$1<s>$2</s>");
  s = s.replace(/^&gt; ?(.*)$/gm, "<blockquote>$1</blockquote>");
  s = emojify(s);
  return s.replace(/\u0000(\d+)\u0000/g, (m, i) => slots[Number(i)]);
}
function unent(s) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}
function textHtml(obj) {
  if (!obj) return "";
  if (typeof obj === "string") return mrkdwn(obj);
  if (obj.type === "plain_text") {
    const t = escapeHtml(obj.text);
    return obj.emoji === false ? t : emojify(t);
  }
  return mrkdwn(obj.text);
}
const plainText = (obj) => (obj && typeof obj === "object" ? obj.text : obj) || "";

/* ------------------------------------------------------------- Block Kit -------- */
/* ctx: {kind: "message"|"ephemeral"|"view", channel, ts, view_id} */
function renderBlocks(blocks, ctx) {
  const root = el("div", {class: "blocks"});
  for (const block of blocks || []) {
    const node = renderBlock(block, ctx);
    if (node) root.append(node);
  }
  return root;
}

function renderBlock(block, ctx) {
  switch (block.type) {
    case "section": {
      const content = el("div", {class: "content"});
      if (block.text) content.append(el("div", {class: "mrkdwn", html: textHtml(block.text)}));
      if (block.fields && block.fields.length) {
        content.append(el("div", {class: "bk-fields"},
          block.fields.map((f) => el("div", {class: "mrkdwn", html: textHtml(f)}))));
      }
      const node = el("div", {class: "bk-section", dataset: {blockId: block.block_id || ""}}, content);
      if (block.accessory) node.append(renderElement(block.accessory, block, ctx));
      return node;
    }
    case "header":
      return el("div", {class: "bk-header", html: textHtml(block.text)});
    case "context":
      return el("div", {class: "bk-context"}, (block.elements || []).map((e) =>
        e.type === "image" ? el("img", {src: e.image_url, alt: e.alt_text || ""})
          : el("span", {class: "mrkdwn", html: textHtml(e)})));
    case "divider":
      return el("hr", {class: "bk-divider"});
    case "actions":
      return el("div", {class: "bk-actions", dataset: {blockId: block.block_id || ""}},
        (block.elements || []).map((e) => renderElement(e, block, ctx)));
    case "image":
      return el("div", {class: "bk-image"},
        block.title ? el("div", {class: "title"}, plainText(block.title)) : null,
        el("img", {src: block.image_url, alt: block.alt_text || ""}));
    case "input":
      return renderInput(block, ctx);
    case "rich_text":
      return el("div", {class: "mrkdwn"}, richText(block));
    default:
      return el("div", {class: "bk-unknown"}, `[${block.type} block]`);
  }
}

function richText(block) {
  const out = [];
  const walk = (node) => {
    if (!node) return;
    if (node.type === "text") out.push(node.text);
    else if (node.type === "user") out.push("@" + userName(node.user_id));
    else if (node.type === "link") out.push(node.text || node.url);
    (node.elements || []).forEach(walk);
  };
  walk(block);
  return out.join("");
}

function renderElement(element, block, ctx) {
  if (element.type === "button") {
    const cls = "btn" + (element.style ? " " + element.style : "");
    const button = el("button", {
      type: "button", class: cls,
      dataset: {actionId: element.action_id || "", value: element.value ?? ""},
      html: textHtml(element.text),
    });
    button.addEventListener("click", async () => {
      if (element.url) window.open(element.url, "_blank", "noopener");
      if (element.confirm && !(await confirmDialog(element.confirm))) return;
      button.disabled = true;
      try {
        await sendAction(ctx, element, block.block_id);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }
  if (element.type === "image") {
    return el("img", {src: element.image_url, alt: element.alt_text || "", width: 64, height: 64});
  }
  if (element.type === "overflow" || element.type === "static_select") {
    const options = element.options || (element.option_groups || []).flatMap((g) => g.options);
    const select = el("select", {class: "bk-select", dataset: {actionId: element.action_id || ""}},
      el("option", {value: ""}, element.type === "overflow" ? "⋯" : plainText(element.placeholder) || "Select"),
      options.map((o) => el("option", {value: o.value}, plainText(o.text))));
    select.addEventListener("change", () => {
      if (!select.value) return;
      const chosen = options.find((o) => o.value === select.value);
      sendAction(ctx, {...element, value: chosen.value}, block.block_id);
    });
    return select;
  }
  return el("span", {class: "bk-unknown"}, `[${element.type}]`);
}

function renderInput(block, ctx) {
  const e = block.element || {};
  const id = `in-${block.block_id}`;
  const errors = (S.viewErrors[ctx.view_id] || {})[block.block_id];
  const wrap = el("div", {class: "bk-input" + (errors ? " invalid" : ""),
    dataset: {blockId: block.block_id, actionId: e.action_id || "", type: e.type,
      optional: block.optional ? "1" : ""}},
    el("label", {for: id}, plainText(block.label),
      block.optional ? el("span", {class: "optional"}, " (optional)") : null));
  const placeholder = plainText(e.placeholder);
  let control;
  const optionsOf = () => e.options || (e.option_groups || []).flatMap((g) => g.options) || [];
  switch (e.type) {
    case "plain_text_input":
    case "email_text_input":
    case "url_text_input":
    case "number_input": {
      const kind = {email_text_input: "email", url_text_input: "url", number_input: "number"}[e.type] || "text";
      control = e.multiline
        ? el("textarea", {id, placeholder, maxlength: e.max_length, minlength: e.min_length})
        : el("input", {id, type: kind, placeholder, maxlength: e.max_length, minlength: e.min_length,
          step: e.type === "number_input" && e.is_decimal_allowed ? "any" : null,
          min: e.min_value, max: e.max_value});
      control.value = e.initial_value ?? "";
      break;
    }
    case "static_select":
    case "multi_static_select": {
      const opts = optionsOf();
      control = el("select", {id, multiple: e.type === "multi_static_select"},
        e.type === "static_select" ? el("option", {value: ""}, placeholder || "Choose an option") : null,
        opts.map((o) => el("option", {value: o.value}, plainText(o.text))));
      if (e.initial_option) control.value = e.initial_option.value;
      for (const o of e.initial_options || []) {
        const opt = [...control.options].find((x) => x.value === o.value);
        if (opt) opt.selected = true;
      }
      break;
    }
    case "users_select":
    case "conversations_select":
    case "channels_select": {
      const items = e.type === "users_select"
        ? Object.values(S.users).map((u) => [u.id, `${u.real_name} (${u.role})`])
        : Object.values(S.channels).filter((c) => !c.is_im).map((c) => [c.id, "#" + c.name]);
      control = el("select", {id}, el("option", {value: ""}, placeholder || "Choose"),
        items.map(([v, t]) => el("option", {value: v}, t)));
      control.value = e.initial_user || e.initial_conversation || e.initial_channel || "";
      break;
    }
    case "datepicker":
      control = el("input", {id, type: "date"});
      control.value = e.initial_date || "";
      break;
    case "radio_buttons":
    case "checkboxes": {
      const kind = e.type === "radio_buttons" ? "radio" : "checkbox";
      const initial = new Set([e.initial_option, ...(e.initial_options || [])].filter(Boolean).map((o) => o.value));
      control = el("div", {id}, (e.options || []).map((o) =>
        el("label", {class: "choice"},
          el("input", {type: kind, name: id, value: o.value, checked: initial.has(o.value)}),
          el("span", {html: textHtml(o.text)}))));
      break;
    }
    default:
      control = el("div", {class: "bk-unknown"}, `[${e.type} input]`);
  }
  wrap.append(control);
  if (block.hint) wrap.append(el("div", {class: "hint"}, plainText(block.hint)));
  if (errors) wrap.append(el("div", {class: "error"}, errors));
  return wrap;
}

function readInputs(root, view) {
  const values = {};
  const missing = {};
  for (const wrap of root.querySelectorAll(".bk-input")) {
    const {blockId, actionId, type, optional} = wrap.dataset;
    const block = (view.blocks || []).find((b) => b.block_id === blockId) || {};
    const options = (block.element && (block.element.options
      || (block.element.option_groups || []).flatMap((g) => g.options))) || [];
    const option = (v) => {
      const o = options.find((x) => x.value === v);
      return o ? {text: o.text, value: o.value} : null;
    };
    const control = wrap.querySelector("input, textarea, select");
    let state;
    let empty;
    switch (type) {
      case "static_select":
        state = {type, selected_option: control.value ? option(control.value) : null};
        empty = !control.value;
        break;
      case "multi_static_select": {
        const chosen = [...control.selectedOptions].map((o) => option(o.value)).filter(Boolean);
        state = {type, selected_options: chosen};
        empty = !chosen.length;
        break;
      }
      case "users_select": state = {type, selected_user: control.value || null}; empty = !control.value; break;
      case "conversations_select": state = {type, selected_conversation: control.value || null}; empty = !control.value; break;
      case "channels_select": state = {type, selected_channel: control.value || null}; empty = !control.value; break;
      case "datepicker": state = {type, selected_date: control.value || null}; empty = !control.value; break;
      case "radio_buttons": {
        const on = wrap.querySelector("input:checked");
        state = {type, selected_option: on ? option(on.value) : null};
        empty = !on;
        break;
      }
      case "checkboxes": {
        const on = [...wrap.querySelectorAll("input:checked")].map((i) => option(i.value));
        state = {type, selected_options: on};
        empty = !on.length;
        break;
      }
      default: {
        const text = control ? control.value : "";
        state = {type, value: text === "" ? null : text};
        empty = !text.trim();
      }
    }
    values[blockId] = {[actionId]: state};
    if (empty && !optional) missing[blockId] = "Please complete this required field.";
  }
  return {values, missing};
}

/* ----------------------------------------------------------------- modals -------- */
function confirmDialog(confirm) {
  return new Promise((resolve) => {
    const close = (answer) => { overlay.remove(); resolve(answer); };
    const overlay = el("div", {class: "overlay confirm"},
      el("div", {class: "modal", role: "dialog"},
        el("div", {class: "modal-head"}, el("h2", {}, plainText(confirm.title) || "Are you sure?")),
        el("div", {class: "modal-body"}, el("div", {class: "mrkdwn", html: textHtml(confirm.text)})),
        el("div", {class: "modal-foot"},
          el("button", {type: "button", class: "btn", onclick: () => close(false)}, plainText(confirm.deny) || "Cancel"),
          el("button", {type: "button", class: "btn " + (confirm.style === "danger" ? "danger" : "primary"),
            onclick: () => close(true)}, plainText(confirm.confirm) || "Yes"))));
    document.body.append(overlay);
  });
}

function restoreInputs(root, values) {
  for (const wrap of root.querySelectorAll(".bk-input")) {
    const state = (values[wrap.dataset.blockId] || {})[wrap.dataset.actionId];
    const control = wrap.querySelector("input, textarea, select");
    if (!state || !control) continue;
    const v = state.value ?? state.selected_option?.value ?? state.selected_user
      ?? state.selected_conversation ?? state.selected_channel ?? state.selected_date;
    if (v !== undefined && v !== null && control.type !== "radio" && control.type !== "checkbox") control.value = v;
  }
}
