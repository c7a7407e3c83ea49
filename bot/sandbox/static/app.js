/* crm-bot sandbox page: a local Slack. Plain JavaScript, no build step.
 *
 * State comes from GET /ui/state (for the selected user) and then live from GET /events
 * (server-sent events of every change in the sandbox's store). What the person does goes to
 * the /ui/* endpoints, which send it to the bot as signed Slack requests.
 */
"use strict";

const S = {
  user: null,            // the demo user we act as
  channel: null,         // selected channel id, or "home"
  thread: null,          // {channel, ts} of the open thread
  users: {},
  channels: {},
  messages: {},          // channel -> every message (replies included), ts order
  ephemerals: [],        // the current user's
  views: [],             // the current user's open modals, oldest first
  home: null,
  unread: {},
  viewErrors: {},        // view id -> {block_id: message}
  renderedView: null,    // id + hash of the modal on screen
  bot: {id: "U0CRMBOT1", name: "crm-bot"},
  topics: {},            // channel -> who works there
  loading: false,        // a state snapshot is on its way: live changes wait in `pending`
  pending: [],
};

function userName(id) {
  if (id === S.bot.id) return S.bot.name;
  const u = S.users[id];
  return u ? u.name : id;
}
function realName(id) {
  if (id === S.bot.id) return S.bot.name;
  const u = S.users[id];
  return u ? u.real_name : id;
}
function channelName(id) {
  const c = S.channels[id];
  if (!c) return id;
  return c.is_im ? "crm-bot" : c.name;
}

async function sendAction(ctx, element, blockId) {
  const body = {user: S.user, action_id: element.action_id, value: element.value ?? null,
    block_id: blockId || null};
  if (ctx.kind === "view") body.view_id = ctx.view_id;
  else { body.channel = ctx.channel; body.message_ts = ctx.ts; }
  await post("/ui/action", body);
}

/* Inputs in modals: rendered here, read back as Slack's view.state.values. */
/* ----------------------------------------------------------------- modals -------- */
function renderModal() {
  const root = $("#modal-root");
  const view = S.views[S.views.length - 1];
  if (!view) {
    root.replaceChildren();
    S.renderedView = null;
    return;
  }
  const key = `${view.id}:${view.hash}:${JSON.stringify(S.viewErrors[view.id] || {})}`;
  if (S.renderedView === key) return;
  const previous = root.querySelector(".modal");
  const kept = previous && previous.dataset.viewId === view.id ? readInputs(previous, view).values : null;
  S.renderedView = key;
  const ctx = {kind: "view", view_id: view.id};
  const body = renderBlocks(view.blocks, ctx);
  body.className = "modal-body";
  const submit = async () => {
    const {values, missing} = readInputs(modal, view);
    if (Object.keys(missing).length) {
      S.viewErrors[view.id] = missing;
      renderModal();
      return;
    }
    delete S.viewErrors[view.id];
    submitButton.disabled = true;
    try {
      await post("/ui/submit", {user: S.user, view_id: view.id, values});
    } finally {
      submitButton.disabled = false;
    }
  };
  const submitButton = view.submit
    ? el("button", {type: "submit", class: "btn primary"}, plainText(view.submit)) : null;
  const modal = el("form", {class: "modal", role: "dialog", "aria-label": plainText(view.title),
    dataset: {viewId: view.id, callbackId: view.callback_id || ""},
    onsubmit: (ev) => { ev.preventDefault(); submit(); }},
    el("div", {class: "modal-head"}, el("h2", {}, plainText(view.title)),
      el("button", {type: "button", class: "icon", "aria-label": "Close",
        onclick: () => post("/ui/close", {user: S.user, view_id: view.id})}, "✕")),
    body,
    el("div", {class: "modal-foot"},
      el("button", {type: "button", class: "btn",
        onclick: () => post("/ui/close", {user: S.user, view_id: view.id})},
        plainText(view.close) || "Cancel"),
      submitButton));
  root.replaceChildren(el("div", {class: "overlay"}, modal));
  if (kept) restoreInputs(modal, kept);
  const first = modal.querySelector("input, textarea, select");
  if (first) first.focus();
}


/* ------------------------------------------------------------- messages -------- */
const COLORS = ["#e8912d", "#2bac76", "#1264a3", "#e01e5a", "#36c5f0", "#9b59b6", "#d4a017", "#16a085"];
function avatar(id) {
  if (id === S.bot.id || !S.users[id]) return el("div", {class: "avatar bot"}, "◆");
  const index = Object.keys(S.users).indexOf(id);
  return el("div", {class: "avatar", style: `background:${COLORS[index % COLORS.length]}`},
    (S.users[id].real_name || id).slice(0, 1).toUpperCase());
}
const timeOf = (ts) => new Date(Number(ts) * 1000).toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"});

function renderMessage(m, channel, {inThread = false, ephemeral = false} = {}) {
  const author = ephemeral || m.bot_id || !m.user ? S.bot.id : m.user;
  const ctx = {kind: ephemeral ? "ephemeral" : "message", channel, ts: m.ts};
  const meta = el("div", {class: "meta"},
    el("span", {class: "author"}, realName(author)),
    author === S.bot.id ? el("span", {class: "app-badge"}, "APP") : null,
    el("time", {datetime: m.ts, title: new Date(Number(m.ts) * 1000).toString()}, timeOf(m.ts)),
    m.edited ? el("span", {class: "edited"}, "(edited)") : null);
  const body = el("div", {class: "body"}, meta);
  if (ephemeral) {
    body.prepend(el("div", {class: "only-you"}, "👁 Only visible to you",
      el("button", {type: "button", onclick: () => {
        S.ephemerals = S.ephemerals.filter((e) => e.ts !== m.ts);
        render();
      }}, "Dismiss")));
  }
  if (!inThread && m.subtype === "thread_broadcast") {
    body.append(el("div", {class: "broadcast-note"}, "replied to a thread: ",
      el("a", {class: "link", onclick: () => openThread(channel, m.thread_ts)}, "view thread")));
  }
  if (m.blocks && m.blocks.length) body.append(renderBlocks(m.blocks, ctx));
  else body.append(el("div", {class: "mrkdwn", html: mrkdwn(m.text)}));
  for (const f of m.files || []) {  // files shared with files.completeUploadExternal
    body.append(f.mimetype && f.mimetype.startsWith("image/")
      ? el("img", {class: "file-image", src: `/files/${f.id}`, alt: f.title || f.name, title: f.title || f.name})
      : el("a", {class: "link", href: `/files/${f.id}`}, f.title || f.name));
  }
  if (!inThread && m.reply_count) {
    body.append(el("button", {type: "button", class: "thread-link", onclick: () => openThread(channel, m.ts)},
      el("b", {}, `${m.reply_count} ${m.reply_count === 1 ? "reply" : "replies"}`),
      el("span", {class: "muted"}, m.latest_reply ? `Last reply ${timeOf(m.latest_reply)}` : "")));
  }
  return el("div", {class: "msg" + (ephemeral ? " ephemeral" : ""), id: `m-${channel}-${m.ts}`.replace(".", "_"),
    dataset: {ts: m.ts, channel}}, avatar(author), body);
}

function isTopLevel(m) {
  return !m.thread_ts || m.thread_ts === m.ts || m.subtype === "thread_broadcast";
}

function render() {
  renderSidebar();
  renderMain();
  renderThread();
  renderModal();
}

function renderSidebar() {
  const nav = $("#sidebar");
  const item = (id, sigil, name, extra) => {
    const unread = S.unread[id] || 0;
    return el("button", {type: "button", class: "item" + (S.channel === id ? " active" : "") + (unread ? " unread" : ""),
      dataset: {channel: id}, onclick: () => selectChannel(id)},
      el("span", {class: "sigil"}, sigil), el("span", {class: "name"}, name), extra || null,
      unread ? el("span", {class: "badge"}, unread) : null);
  };
  const channels = Object.values(S.channels).filter((c) => !c.is_im).sort((a, b) => a.name.localeCompare(b.name));
  const dm = S.user ? "D" + S.user.slice(1) : null;
  nav.replaceChildren(
    item("home", "⌂", "crm-bot Home"),
    el("h3", {}, "Channels"),
    ...channels.map((c) => item(c.id, "#", c.name)),
    el("h3", {}, "Direct messages"),
    ...(dm ? [item(dm, "◆", "crm-bot", el("span", {class: "app-badge"}, "APP"))] : []));
}

function channelItems(channel) {
  const items = (S.messages[channel] || []).filter(isTopLevel).map((m) => ({m, ephemeral: false}));
  for (const e of S.ephemerals) {
    if (e.channel === channel && (!e.thread_ts || e.thread_ts === e.ts)) items.push({m: e, ephemeral: true});
  }
  return items.sort((a, b) => Number(a.m.ts) - Number(b.m.ts));
}

function renderMain() {
  const header = $("#pane-header");
  const list = $("#messages");
  const composer = $("#composer");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const scroll = list.scrollTop;
  if (S.channel === "home") {
    header.replaceChildren(el("div", {}, el("h2", {}, "crm-bot"), el("div", {class: "topic"}, "App Home")));
    composer.hidden = true;
    list.replaceChildren(S.home
      ? el("div", {class: "home"}, renderBlocks(S.home.blocks, {kind: "view", view_id: S.home.id}))
      : el("div", {class: "empty"}, "Opening App Home…"));
    list.scrollTop = scroll;
    return;
  }
  composer.hidden = false;
  const info = S.channels[S.channel] || {name: S.channel, is_im: S.channel.startsWith("D")};
  header.replaceChildren(el("div", {},
    el("h2", {}, info.is_im ? "crm-bot" : "# " + (info.name || S.channel)),
    el("div", {class: "topic"}, info.is_im ? "Your direct messages with the bot"
      : S.topics[S.channel] || "")));
  $("#composer-input").placeholder = `Message ${info.is_im ? "crm-bot" : "#" + (info.name || "")} — try /crm help`;
  const items = channelItems(S.channel);
  list.replaceChildren(...(items.length ? items.map(({m, ephemeral}) => renderMessage(m, S.channel, {ephemeral}))
    : [el("div", {class: "empty"}, "No messages yet. Type /crm help below.")]));
  list.scrollTop = nearBottom ? list.scrollHeight : scroll;
}

function renderThread() {
  const panel = $("#thread-panel");
  if (!S.thread) { panel.hidden = true; return; }
  panel.hidden = false;
  const {channel, ts} = S.thread;
  $("#thread-channel").textContent = "#" + channelName(channel);
  const all = S.messages[channel] || [];
  const parent = all.find((m) => m.ts === ts);
  const replies = all.filter((m) => m.thread_ts === ts && m.ts !== ts);
  const mine = S.ephemerals.filter((e) => e.channel === channel && e.thread_ts === ts && e.ts !== ts);
  const list = $("#thread-messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  const items = [...replies.map((m) => ({m, ephemeral: false})), ...mine.map((m) => ({m, ephemeral: true}))]
    .sort((a, b) => Number(a.m.ts) - Number(b.m.ts));
  list.replaceChildren(
    parent ? renderMessage(parent, channel, {inThread: true}) : el("div", {class: "empty"}, "This message was deleted."),
    el("div", {class: "thread-divider"}, `${replies.length} ${replies.length === 1 ? "reply" : "replies"}`),
    ...items.map(({m, ephemeral}) => renderMessage(m, channel, {inThread: true, ephemeral})));
  if (nearBottom) list.scrollTop = list.scrollHeight;
}

function openThread(channel, ts) {
  S.thread = {channel, ts};
  renderThread();
}

function selectChannel(id) {
  S.channel = id;
  S.unread[id] = 0;
  if (id === "home") post("/ui/home", {user: S.user});
  const hash = id === "home" ? "home" : id;
  if (location.hash.slice(1).split("/")[0] !== hash) history.replaceState(null, "", "#" + hash);
  renderSidebar();
  renderMain();
  const list = $("#messages");
  list.scrollTop = list.scrollHeight;
  if (id !== "home") $("#composer-input").focus();
}

function focusMessage(channel, ts) {
  const all = S.messages[channel] || [];
  const m = all.find((x) => x.ts === ts);
  if (m && !isTopLevel(m)) openThread(channel, m.thread_ts);
  selectChannel(channel);
  const node = document.getElementById(`m-${channel}-${ts}`.replace(".", "_"));
  if (node) { node.scrollIntoView({block: "center"}); node.classList.add("flash"); }
}

/* ------------------------------------------------------------ live state -------- */
function upsert(list, item, key = "ts") {
  const i = list.findIndex((x) => x[key] === item[key]);
  if (i >= 0) list[i] = item; else list.push(item);
}

function apply(change) {
  switch (change.type) {
    case "channel":
      S.channels[change.channel.id] = change.channel;
      S.messages[change.channel.id] ||= [];
      renderSidebar();
      return;
    case "message": {
      const list = (S.messages[change.channel] ||= []);
      upsert(list, change.message);
      list.sort((a, b) => Number(a.ts) - Number(b.ts));
      if (change.channel !== S.channel && isTopLevel(change.message)) {
        S.unread[change.channel] = (S.unread[change.channel] || 0) + 1;
        renderSidebar();
      }
      if (change.channel === S.channel) renderMain();
      if (S.thread && S.thread.channel === change.channel) renderThread();
      return;
    }
    case "message_changed":
      upsert((S.messages[change.channel] ||= []), change.message);
      if (change.channel === S.channel) renderMain();
      if (S.thread && S.thread.channel === change.channel) renderThread();
      return;
    case "message_deleted":
      S.messages[change.channel] = (S.messages[change.channel] || []).filter((m) => m.ts !== change.ts);
      renderMain();
      renderThread();
      return;
    case "ephemeral":
      if (change.ephemeral.user !== S.user) return;
      upsert(S.ephemerals, change.ephemeral);
      renderMain();
      renderThread();
      return;
    case "ephemeral_deleted":
      if (change.user !== S.user) return;
      S.ephemerals = S.ephemerals.filter((e) => e.ts !== change.ts);
      renderMain();
      renderThread();
      return;
    case "home":
      if (change.user !== S.user) return;
      S.home = change.view;
      if (S.channel === "home") renderMain();
      return;
    case "view":
      if (change.user !== S.user) return;
      upsert(S.views, change.view, "id");
      renderModal();
      return;
    case "view_closed":
      S.views = S.views.filter((v) => v.id !== change.view_id);
      delete S.viewErrors[change.view_id];
      renderModal();
      return;
    case "view_failed":
      // Slack shows a submission the app did not acknowledge within 3 s as failed, and the
      // modal stays open.
      if (!S.views.some((v) => v.id === change.view_id)) return;
      toast("We had some trouble connecting (the app did not answer within 3 s). Try again?", true);
      return;
    case "view_errors":
      if (!S.views.some((v) => v.id === change.view_id)) return;
      S.viewErrors[change.view_id] = change.errors || {};
      renderModal();
      return;
    default:
  }
}

async function loadState() {
  S.loading = true;
  let state;
  try {
    const res = await fetch(`/ui/state?user=${encodeURIComponent(S.user || "")}`);
    state = await res.json();
  } finally {
    S.loading = false;
  }
  const pending = S.pending;
  S.pending = [];
  S.users = state.users;
  S.bot = state.bot;
  S.topics = state.topics || {};
  $("#workspace").textContent = state.title;
  document.title = state.title;
  S.channels = Object.fromEntries(state.channels.map((c) => [c.id, c]));
  S.messages = state.messages;
  if (!S.user || !S.users[S.user]) {
    S.user = localStorage.getItem("crm-sandbox-user");
    if (!S.users[S.user]) S.user = Object.keys(S.users)[0];
    S.pending = pending.concat(S.pending);
    return loadState();
  }
  S.ephemerals = state.ephemerals;
  S.views = state.views;
  S.home = state.home;
  for (const change of pending) apply(change);  // changes that raced the snapshot
  fillSwitcher();
  const myDm = "D" + S.user.slice(1);
  if (!S.channel || (S.channel !== "home" && S.channel !== myDm && !S.channels[S.channel])) {
    const wanted = location.hash.slice(1).split("/")[0];
    S.channel = S.channels[wanted] || wanted === "home" || wanted === myDm ? wanted
      : (Object.values(S.channels).find((c) => !c.is_im) || {}).id || "home";
  }
  render();
  const [hashChannel, hashTs] = location.hash.slice(1).split("/");
  if (hashTs && S.channels[hashChannel]) focusMessage(hashChannel, hashTs);
  document.body.dataset.user = S.user;
  document.body.dataset.ready = "1";
}

function fillSwitcher() {
  const select = $("#user-switcher");
  select.replaceChildren(...Object.values(S.users).map((u) =>
    el("option", {value: u.id}, `${u.real_name} — ${u.role}`)));
  select.value = S.user;
}

async function switchUser(id) {
  S.user = id;
  localStorage.setItem("crm-sandbox-user", id);
  S.thread = S.thread && S.channels[S.thread.channel] && !S.thread.channel.startsWith("D") ? S.thread : null;
  if (S.channel && S.channel.startsWith("D")) S.channel = "D" + id.slice(1);
  S.viewErrors = {};
  S.renderedView = null;
  await loadState();
  if (S.channel === "home") post("/ui/home", {user: S.user});
  toast(`You are now ${S.users[id].real_name} (${S.users[id].role}).`);
}

function connect() {
  const live = $("#live");
  const source = new EventSource("/events");
  source.onopen = () => { live.classList.add("on"); loadState(); };
  source.onerror = () => live.classList.remove("on");
  source.onmessage = (ev) => {
    try {
      const change = JSON.parse(ev.data);
      if (S.loading) S.pending.push(change); else apply(change);
    } catch (err) { console.error(err); }
  };
}

/* -------------------------------------------------------------- actions -------- */
async function post(path, body) {
  let res;
  try {
    res = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  } catch (err) {
    toast("The sandbox does not answer. Is `crm-bot demo` still running?", true);
    return null;
  }
  const answer = await res.json().catch(() => ({}));
  if (!res.ok) toast(answer.error || `The sandbox answered ${res.status}.`, true);
  else if (answer.status >= 400) toast(`The bot answered HTTP ${answer.status}.`, true);
  return answer;
}

function toast(text, error = false) {
  const node = el("div", {class: "toast" + (error ? " error" : "")}, text);
  $("#toasts").append(node);
  setTimeout(() => node.remove(), error ? 6000 : 2500);
}

function setupComposer(form, input, threadTs) {
  const send = async () => {
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    const channel = threadTs ? S.thread.channel : S.channel;
    await post("/ui/message", {user: S.user, channel, text, thread_ts: threadTs ? S.thread.ts : null});
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); send(); }
  });
}

document.addEventListener("click", (ev) => {
  const link = ev.target.closest("a");
  if (!link) return;
  if (link.classList.contains("channel-link")) {
    ev.preventDefault();
    if (S.channels[link.dataset.channel]) selectChannel(link.dataset.channel);
  } else if (link.classList.contains("permalink")) {
    const match = new URL(link.href, location.href).pathname.match(/^\/archives\/(\w+)\/p(\d+)(\d{6})$/);
    if (match) { ev.preventDefault(); focusMessage(match[1], `${match[2]}.${match[3]}`); }
  }
});
document.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && S.views.length) post("/ui/close", {user: S.user, view_id: S.views[S.views.length - 1].id});
});

$("#user-switcher").addEventListener("change", (ev) => switchUser(ev.target.value));
$("#thread-close").addEventListener("click", () => { S.thread = null; renderThread(); });
setupComposer($("#composer"), $("#composer-input"), false);
setupComposer($("#thread-composer"), $("#thread-input"), true);
connect();
