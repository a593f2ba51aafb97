// The agent console: sign in with an agent token, watch conversations live,
// read one's history, reply, take over from the bot and hand back.
//
// - The list: `GET /api/v1/chat/conversations` with the agent's token (plus
//   `status=unanswered` for what reconciliation stored without answering),
//   refreshed every 5 s; a server without that route is read with the admin
//   token (`GET /api/v1/admin/conversations`) when one is given. A
//   conversation can also be opened by id.
// - Live: the console subscribes to every listed conversation (at most 50)
//   on its WebSocket, so each one's last message and bot state change as it
//   happens; subscriptions belong to a connection and are made again after
//   every reconnect.
// - The open conversation is a ConversationLog: history by sequence number,
//   pushes de-duplicated, gaps read back.
// - Take over = the agent's first message: the console sends a short
//   greeting, which pauses the bot at once (the server pauses it on any agent
//   message) and tells the customer a person is there. Resume bot sends
//   `resumeBot`.

import { api, ApiError, ChatSocket, ConversationLog, Outbox, withToken } from './chat-core.js';
import { el, renderActions, senderLabel, timeOf } from './chat-render.js';
import { tokens, endpoints, saveEndpoints, ago, toast } from './settings.js';

const TAKE_OVER_GREETING = 'Hi! A member of our team has joined the conversation and will take it from here.';
const MAX_SUBSCRIPTIONS = 50;
const $ = (id) => document.getElementById(id);

const state = {
  apiBase: '',
  socketUrl: '',
  agentToken: '',
  adminToken: '',
  agentName: '',
  socket: null,
  agentListRoute: null, // null: not tried; true/false: whether the server has it
  conversations: new Map(),
  current: null,
  log: null,
  filter: 'all',
  listTimer: null,
};
const outbox = new Outbox();

init();

async function init() {
  Object.assign(state, await endpoints());
  $('api-base').value = localStorage.getItem('switchboard.apiBase') || '';
  $('socket-url').value = localStorage.getItem('switchboard.socketUrl') || '';
  $('sign-in').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('refresh').addEventListener('click', () => refreshList());
  $('open-by-id').addEventListener('submit', (event) => {
    event.preventDefault();
    const id = $('conversation-id').value.trim();
    if (!id) return;
    conversation(id).manual = true;
    $('conversation-id').value = '';
    subscribeAll();
    openConversation(id);
  });
  for (const radio of document.querySelectorAll('input[name=filter]')) {
    radio.addEventListener('change', () => {
      state.filter = radio.value;
      renderList();
    });
  }
  $('reply').addEventListener('submit', (event) => {
    event.preventDefault();
    sendReply($('reply-text').value);
  });
  $('reply-text').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('reply').requestSubmit();
    }
  });
  $('reply-text').addEventListener('input', typingChanged);
  $('take-over').addEventListener('click', takeOver);
  $('resume-bot').addEventListener('click', resumeBot);
  const saved = tokens.get('agent');
  if (saved) start(saved, tokens.get('admin'));
  else showSignIn();
}

function showSignIn() {
  $('sign-in').hidden = false;
  $('workspace').hidden = true;
  $('sign-out').hidden = true;
  $('agent-token').focus();
}

async function signIn(event) {
  event.preventDefault();
  const agent = $('agent-token').value.trim();
  const admin = $('admin-token').value.trim();
  saveEndpoints({ apiBase: $('api-base').value.trim(), socketUrl: $('socket-url').value.trim() });
  Object.assign(state, await endpoints());
  $('sign-in-error').textContent = '';
  try {
    // An agent token may read any conversation's history; a customer's
    // token may not (403), and a wrong one is refused (401).
    await api(state.apiBase, '/api/v1/chat/conversations/sign-in-check/messages?limit=1', { token: agent });
    if (admin) await api(state.apiBase, '/api/v1/admin/conversations?limit=1', { token: admin });
  } catch (error) {
    const which = error.status === 403 ? 'That is not an agent token.' : error.status === 401 ? 'A token was refused.' : `Cannot reach the API (${error.message}).`;
    $('sign-in-error').textContent = which;
    return;
  }
  tokens.set('agent', agent);
  tokens.set('admin', admin);
  $('agent-token').value = '';
  $('admin-token').value = '';
  start(agent, admin);
}

function signOut() {
  tokens.clear();
  // One agent's unsent replies never go out under the next agent's name.
  outbox.items.splice(0);
  clearInterval(state.flushTimer);
  state.socket?.stop();
  state.socket = null;
  clearInterval(state.listTimer);
  state.log?.close();
  state.log = null;
  state.current = null;
  state.conversations.clear();
  $('conversations').replaceChildren();
  $('messages').replaceChildren();
  $('connection').textContent = 'Signed out';
  showSignIn();
}

function start(agentToken, adminToken) {
  state.agentToken = agentToken;
  state.adminToken = adminToken;
  $('sign-in').hidden = true;
  $('workspace').hidden = false;
  $('sign-out').hidden = false;
  state.socket = new ChatSocket({
    connectUrl: async () => withToken(state.socketUrl, state.agentToken),
    onState: (s) => {
      const label = { connecting: 'Connecting…', open: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline', stopped: 'Signed out' }[s] || s;
      $('connection').textContent = label;
      $('connection').dataset.state = s;
      if (s !== 'open') for (const c of state.conversations.values()) c.subscribed = false;
      updateComposer();
    },
    onOpen: () => {
      subscribeAll();
      state.log?.catchUp();
      outbox.flush(state.socket, { force: true });
    },
    onFrame,
  });
  state.socket.start();
  clearInterval(state.flushTimer);
  state.flushTimer = setInterval(() => state.socket && outbox.flush(state.socket), 4000);
  refreshList();
  clearInterval(state.listTimer);
  state.listTimer = setInterval(refreshList, 5000);
}

function conversation(id) {
  let c = state.conversations.get(id);
  if (!c) {
    c = { id, pageId: null, botPaused: false, owed: 0, unanswered: false, aiProcessing: false, lastTs: 0, lastSeq: 0, lastMessage: null, subscribed: false, unread: 0, manual: false, listed: false };
    state.conversations.set(id, c);
  }
  return c;
}

// The list.
async function refreshList() {
  let rows = null;
  let unanswered = null;
  try {
    if (state.agentListRoute !== false) {
      try {
        const [page, waiting] = await Promise.all([
          api(state.apiBase, '/api/v1/chat/conversations?limit=50', { token: state.agentToken }),
          api(state.apiBase, '/api/v1/chat/conversations?limit=100&status=unanswered', { token: state.agentToken }),
        ]);
        rows = [...(page.conversations || []), ...(waiting.conversations || [])];
        unanswered = new Set((waiting.conversations || []).map((r) => r.conversation_id));
        state.agentListRoute = true;
      } catch (error) {
        if (error.status !== 404 && error.status !== 405) throw error;
        state.agentListRoute = false;
      }
    }
    if (rows === null && state.adminToken) {
      const [all, waiting] = await Promise.all([
        api(state.apiBase, '/api/v1/admin/conversations?limit=50', { token: state.adminToken }),
        api(state.apiBase, '/api/v1/admin/conversations?limit=100&status=unanswered', { token: state.adminToken }),
      ]);
      rows = [...all.conversations, ...waiting.conversations];
      unanswered = new Set(waiting.conversations.map((r) => r.conversation_id));
    }
  } catch (error) {
    $('list-note').textContent = `The list could not be read: ${error.message}`;
    return;
  }
  if (rows === null) {
    $('list-note').textContent = 'Listing conversations needs the admin token (sign in again with it), or open one by id.';
  } else {
    $('list-note').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    for (const row of rows) {
      const c = conversation(row.conversation_id);
      c.listed = true;
      c.pageId = row.page_id ?? c.pageId;
      c.botPaused = Boolean(row.bot_paused);
      c.owed = row.owed_messages || 0;
      c.aiProcessing = Boolean(row.ai_processing);
      c.unanswered = unanswered ? unanswered.has(row.conversation_id) : Boolean(row.unanswered);
      c.lastTs = Math.max(c.lastTs, row.last_message_timestamp || 0);
      if (row.last_message && (row.last_message.seq || 0) >= c.lastSeq) {
        c.lastMessage = row.last_message;
        c.lastSeq = row.last_message.seq || c.lastSeq;
      }
    }
  }
  subscribeAll();
  renderList();
  if (state.current) renderHead();
}

function sorted() {
  return [...state.conversations.values()].sort((a, b) => b.lastTs - a.lastTs || a.id.localeCompare(b.id));
}

/** Watches the newest conversations (a connection's subscriptions end with it). */
function subscribeAll() {
  if (!state.socket || state.socket.state !== 'open') return;
  const wanted = sorted().filter((c) => c.listed || c.manual).slice(0, MAX_SUBSCRIPTIONS);
  if (state.current && !wanted.some((c) => c.id === state.current)) wanted.push(conversation(state.current));
  for (const c of wanted) {
    if (c.subscribed) continue;
    if (state.socket.send({ action: 'subscribe', conversation_id: c.id })) c.subscribed = true;
  }
}

function renderList() {
  const list = $('conversations');
  const shown = sorted().filter((c) => {
    if (state.filter === 'waiting') return c.unanswered || c.owed > 0;
    if (state.filter === 'paused') return c.botPaused;
    return true;
  });
  // Redrawn every few seconds: keyboard focus stays on the same conversation.
  const focused = list.contains(document.activeElement) ? document.activeElement.dataset.conversationId : null;
  list.replaceChildren(
    ...shown.map((c) => {
      const last = c.lastMessage;
      const channel = c.pageId ? `Pancake · page ${c.pageId}` : 'Web';
      return el(
        'li',
        {},
        el(
          'button',
          {
            type: 'button',
            class: `conversation-item${c.id === state.current ? ' current' : ''}${c.unread ? ' unread' : ''}`,
            'aria-current': c.id === state.current ? 'true' : null,
            dataset: { conversationId: c.id },
            onclick: () => openConversation(c.id),
          },
          el('span', { class: 'item-top' }, el('strong', { class: 'item-id' }, c.id), el('span', { class: 'item-time' }, ago(c.lastTs))),
          el('span', { class: 'item-last' }, last ? `${senderLabel(last, { agentView: true })}: ${last.message}` : '…'),
          el(
            'span',
            { class: 'badges' },
            el('span', { class: 'badge channel' }, channel),
            c.botPaused ? el('span', { class: 'badge paused' }, 'Bot paused') : el('span', { class: 'badge bot' }, 'Bot on'),
            c.owed ? el('span', { class: 'badge owed' }, `${c.owed} owed`) : null,
            c.unanswered ? el('span', { class: 'badge unanswered' }, 'Unanswered') : null,
            c.aiProcessing ? el('span', { class: 'badge busy' }, 'Answering…') : null,
            c.unread ? el('span', { class: 'badge unread-count', 'aria-label': `${c.unread} new` }, String(c.unread)) : null,
          ),
        ),
      );
    }),
  );
  if (focused) list.querySelector(`[data-conversation-id="${CSS.escape(focused)}"]`)?.focus();
}

/** The last message of a conversation the list shows without one. */
async function fetchTail(c, lastSeq) {
  const after = Math.max(0, lastSeq - 5);
  try {
    const page = await api(state.apiBase, `/api/v1/chat/conversations/${encodeURIComponent(c.id)}/messages?after_seq=${after}&limit=5`, { token: state.agentToken });
    const last = page.messages[page.messages.length - 1];
    if (last && last.seq >= c.lastSeq) {
      c.lastMessage = last;
      c.lastSeq = last.seq;
      c.lastTs = Math.max(c.lastTs, last.created_at || 0);
      renderList();
    }
  } catch {
    // The next push or refresh brings it.
  }
}

// Frames.
function onFrame(frame) {
  const c = frame.conversation_id ? conversation(frame.conversation_id) : null;
  switch (frame.type) {
    case 'subscribed':
      if (frame.last_seq > c.lastSeq) fetchTail(c, frame.last_seq);
      // Messages written before the subscription took hold: read them now.
      if (frame.conversation_id === state.current) state.log?.catchUp();
      break;
    case 'message':
      if (frame.seq >= c.lastSeq) {
        c.lastMessage = frame;
        c.lastSeq = frame.seq;
        c.lastTs = Math.max(c.lastTs, frame.created_at || 0);
      }
      if (frame.sender_type === 'customer') c.unanswered = false;
      // An agent's message pauses the bot; the server tells only its sender.
      if (frame.sender_type === 'agent' && frame.seq >= c.lastSeq && !c.botPaused) {
        c.botPaused = true;
        if (frame.conversation_id === state.current) renderHead();
      }
      if (frame.conversation_id === state.current) {
        state.log?.accept(frame);
        if (frame.sender_type === 'customer') hideTyping();
      } else if (frame.sender_type !== 'agent') c.unread += 1;
      renderList();
      break;
    case 'ack': {
      const item = outbox.take(frame.client_message_id);
      const name = /^agent:([^:]+):/.exec(frame.message_id || '')?.[1];
      if (name && !state.agentName) {
        state.agentName = name;
        $('connection').title = `Signed in as ${name}`;
      }
      if (item && frame.seq > 0) {
        const message = { type: 'message', conversation_id: frame.conversation_id, seq: frame.seq, message_id: frame.message_id, sender_type: 'agent', sender_id: name || '', client_message_id: frame.client_message_id, message: item.message, actions: [], created_at: Date.now() / 1000 };
        onFrame(message);
      }
      renderMessages();
      break;
    }
    case 'status':
      c.botPaused = Boolean(frame.bot_paused);
      renderList();
      if (frame.conversation_id === state.current) renderHead();
      break;
    case 'typing':
      if (frame.conversation_id === state.current && frame.sender_type === 'customer') {
        if (frame.typing) showTyping();
        else hideTyping();
      }
      break;
    case 'rate_limited':
      toast('The conversation is over its rate limit; the message is stored and will be delivered.', 'warn');
      break;
    case 'error':
      // Only a refusal drops the reply; a passing failure (the store away)
      // stays in the outbox and is resent with the same id.
      if (frame.client_message_id && FINAL_ERRORS.has(frame.code) && outbox.take(frame.client_message_id)) renderMessages();
      toast(`${frame.action ? `${frame.action}: ` : ''}${frame.message}`, 'error');
      break;
    default:
      break;
  }
}

// The open conversation.
function openConversation(id) {
  if (state.current === id) return;
  state.log?.close();
  state.current = id;
  const c = conversation(id);
  c.unread = 0;
  $('messages').replaceChildren();
  hideTyping();
  state.log = new ConversationLog({
    conversationId: id,
    readAfter: (after) => api(state.apiBase, `/api/v1/chat/conversations/${encodeURIComponent(id)}/messages?after_seq=${after}&limit=500`, { token: state.agentToken }),
    onChange: renderMessages,
    onError: (error) => toast(`History not read: ${error.message}`, 'error'),
  });
  state.log.catchUp();
  subscribeAll();
  renderHead();
  renderList();
  updateComposer();
  $('reply-text').focus();
}

function renderHead() {
  const c = conversation(state.current);
  $('conversation-title').textContent = c.id;
  $('conversation-meta').textContent = [c.pageId ? `Pancake page ${c.pageId}` : 'Web chat', c.owed ? `${c.owed} owed` : '', c.unanswered ? 'unanswered' : ''].filter(Boolean).join(' · ');
  const pill = $('bot-state');
  pill.hidden = false;
  pill.textContent = c.botPaused ? 'Bot paused — you are answering' : 'Bot answering';
  pill.dataset.state = c.botPaused ? 'paused' : 'bot';
  updateComposer();
}

function updateComposer() {
  const open = Boolean(state.current);
  const live = state.socket?.state === 'open';
  const c = open ? conversation(state.current) : null;
  $('reply-text').disabled = !open;
  $('send').disabled = !open;
  $('take-over').disabled = !open || !live || c.botPaused;
  $('resume-bot').disabled = !open || !live || !c.botPaused;
}

const rendered = new Map();
function renderMessages() {
  const list = $('messages');
  if (!state.log) return;
  const messages = state.log.list();
  if (rendered.size && [...rendered.values()].some((n) => !list.contains(n))) rendered.clear();
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  list.replaceChildren(
    ...messages.map((m) => {
      let node = rendered.get(`${m.conversation_id}:${m.seq}`);
      if (!node) {
        node = el(
          'li',
          { class: `msg from-${m.sender_type}`, dataset: { seq: m.seq, messageId: m.message_id || '' } },
          el('div', { class: 'meta' }, `#${m.seq} · ${senderLabel(m, { agentView: true })} · ${timeOf(m.created_at)}`),
          el('div', { class: 'bubble' }, m.message),
          renderActions(m, () => {}, { interactive: false }),
        );
        rendered.set(`${m.conversation_id}:${m.seq}`, node);
      }
      return node;
    }),
    ...outbox.items
      .filter((i) => i.conversation_id === state.current)
      .map((i) => el('li', { class: 'msg from-agent pending' }, el('div', { class: 'meta' }, 'Sending…'), el('div', { class: 'bubble' }, i.message))),
  );
  if (nearBottom || messages.length < 3) list.scrollTop = list.scrollHeight;
}

// Errors after which resending the same frame cannot succeed.
const FINAL_ERRORS = new Set(['invalid_frame', 'invalid_request', 'payload_too_large', 'forbidden', 'conflict']);
// API Gateway closes a socket on a frame over 32 KB: refuse such a reply here.
const MAX_REPLY_BYTES = 30000;

function sendReply(text) {
  const message = text.trim();
  if (!message || !state.current) return;
  if (new TextEncoder().encode(message).length > MAX_REPLY_BYTES) {
    toast(`This reply is too long to send (at most ${MAX_REPLY_BYTES} bytes); split it.`, 'error');
    return;
  }
  outbox.add(state.current, message);
  $('reply-text').value = '';
  stopTyping();
  renderMessages();
  outbox.flush(state.socket);
}

function takeOver() {
  if (!state.current) return;
  sendReply(TAKE_OVER_GREETING);
  $('reply-text').focus();
}

function resumeBot() {
  if (!state.current) return;
  if (!state.socket.send({ action: 'resumeBot', conversation_id: state.current })) toast('Not connected: try again in a moment.', 'warn');
}

// Typing, both ways.
let typingSince = 0;
let typingTimer = null;
function typingChanged() {
  if (!state.current) return;
  if (!$('reply-text').value.trim()) return stopTyping();
  if (Date.now() - typingSince > 3000) {
    state.socket?.send({ action: 'typing', conversation_id: state.current, typing: true });
    typingSince = Date.now();
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, 4000);
}
function stopTyping() {
  clearTimeout(typingTimer);
  if (typingSince && state.current) state.socket?.send({ action: 'typing', conversation_id: state.current, typing: false });
  typingSince = 0;
}
let customerTypingTimer = null;
function showTyping() {
  $('typing').textContent = 'Customer is typing…';
  $('typing').hidden = false;
  clearTimeout(customerTypingTimer);
  customerTypingTimer = setTimeout(hideTyping, 8000);
}
function hideTyping() {
  clearTimeout(customerTypingTimer);
  $('typing').hidden = true;
}

// Catch ApiError from unexpected places in the console (kept for the stack).
addEventListener('unhandledrejection', (event) => {
  if (event.reason instanceof ApiError) toast(event.reason.message, 'error');
});
