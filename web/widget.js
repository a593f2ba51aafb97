// Switchboard's customer chat widget: one tag on any website.
//
//   <script src="https://chat.example.com/widget.js" data-widget-key="PUBLIC_KEY" async></script>
//
// Optional attributes: data-api-base (the HTTP API, when it is not where
// this script is served from), data-title, data-greeting, data-open="true".
//
// A classic script (it works in any page), isolated in a shadow root so the
// host page's styles neither leak in nor out; its logic lives in the module
// assets/chat-core.js and assets/chat-render.js beside it, shared with the
// agent console. The
// conversation (its id, token and the messages not yet acknowledged) is kept
// in localStorage per site and key, so it survives a reload and continues in
// another tab; a token close to expiry is renewed through the same public
// session route (`{conversation_id, token}` resumes).
(() => {
  'use strict';
  const script = document.currentScript;
  if (!script || window.SwitchboardWidget) return;
  const scriptUrl = new URL(script.src, location.href);
  const assets = new URL('assets/', scriptUrl);
  const options = {
    key: script.dataset.widgetKey || '',
    apiBase: new URL(script.dataset.apiBase || '/', scriptUrl).href,
    title: script.dataset.title || 'Chat with us',
    greeting: script.dataset.greeting || 'Hi! Ask us anything — we usually answer in seconds.',
    open: script.dataset.open === 'true',
  };
  const pending = [];
  // Usable before the module has loaded: calls are replayed once it has.
  window.SwitchboardWidget = {
    open: () => pending.push('open'),
    close: () => pending.push('close'),
  };
  const start = () =>
    Promise.all([import(new URL('chat-core.js', assets).href), import(new URL('chat-render.js', assets).href)]).then(([core, render]) => {
      const widget = createWidget({ ...core, ...render }, options, assets);
      window.SwitchboardWidget = widget.api;
      for (const call of pending) widget.api[call]();
    });
  const boot = () =>
    start().catch((error) => {
      console.error('Switchboard widget could not start', error);
    });
  if (document.body) boot();
  else addEventListener('DOMContentLoaded', boot, { once: true });

  function createWidget(core, options, assets) {
    const { api, ApiError, ChatSocket, ConversationLog, Outbox, el, renderActions, senderLabel, timeOf, withToken, defaultSocketUrl, chatIcon } = core;
    const storeKey = `switchboard-chat:${new URL(options.apiBase).origin}:${options.key}`;
    const openKey = `${storeKey}:open`;
    const load = () => {
      try {
        return JSON.parse(localStorage.getItem(storeKey)) || null;
      } catch {
        return null;
      }
    };
    let session = load();
    const save = () => {
      try {
        if (session) localStorage.setItem(storeKey, JSON.stringify(session));
        else localStorage.removeItem(storeKey);
      } catch {
        // Storage full or refused: the conversation lasts as long as the page.
      }
    };

    // The shadow root and its elements.
    const host = el('div', { id: 'switchboard-widget' });
    const root = host.attachShadow({ mode: 'open' });
    const style = el('link', { rel: 'stylesheet', href: new URL('widget.css', assets).href });
    const badge = el('span', { class: 'badge', hidden: true, 'aria-hidden': 'true' });
    const launcher = el(
      'button',
      { type: 'button', class: 'launcher', 'aria-label': `Open chat: ${options.title}`, 'aria-expanded': 'false', 'aria-controls': 'sbw-panel' },
      chatIcon(),
      badge,
    );
    const status = el('span', { class: 'status', role: 'status', 'aria-live': 'polite' }, '');
    const closeButton = el('button', { type: 'button', class: 'close', 'aria-label': 'Close chat' }, '×');
    const list = el('ol', { class: 'messages', 'aria-label': 'Messages', 'aria-live': 'polite', 'aria-relevant': 'additions', tabindex: '0' });
    const notice = el('p', { class: 'notice', hidden: true, role: 'status' });
    const typing = el('p', { class: 'typing', hidden: true, 'aria-live': 'polite' });
    const input = el('textarea', { id: 'sbw-input', rows: '1', placeholder: 'Type a message…', 'aria-label': 'Message', maxlength: '4000' });
    const sendButton = el('button', { type: 'submit', class: 'send' }, 'Send');
    const form = el('form', { class: 'composer' }, input, sendButton);
    const panel = el(
      'section',
      { class: 'panel', id: 'sbw-panel', role: 'dialog', 'aria-label': options.title, hidden: true },
      el('header', {}, el('div', { class: 'heading' }, el('h2', {}, options.title), status), closeButton),
      el('div', { class: 'scroller' }, el('p', { class: 'greeting' }, options.greeting), list, typing),
      notice,
      form,
    );
    root.append(style, launcher, panel);
    // Hidden until its stylesheet has loaded (no flash of unstyled buttons);
    // set through the CSSOM, which a page's CSP allows.
    host.style.visibility = 'hidden';
    const shown = () => host.style.removeProperty('visibility');
    style.addEventListener('load', shown, { once: true });
    style.addEventListener('error', shown, { once: true });
    document.body.append(host);

    let log = null;
    let socket = null;
    let botPaused = false;
    let botTypingTimer = null;
    let agentTypingTimer = null;
    let typingSentAt = 0;
    let typingStopTimer = null;
    let lastRefresh = 0;
    const outbox = new Outbox({
      items: session?.outbox || [],
      save: (items) => {
        if (!session) return;
        session.outbox = items;
        save();
      },
    });

    const setStatus = (state) => {
      const text = { connecting: 'Connecting…', open: 'Online', reconnecting: 'Reconnecting…', offline: 'Offline — waiting for the network', stopped: '' }[state] ?? state;
      status.textContent = text;
      host.dataset.connection = state;
      panel.dataset.connection = state;
    };
    const showNotice = (text, ms = 6000) => {
      notice.textContent = text;
      notice.hidden = !text;
      clearTimeout(showNotice.timer);
      if (text && ms) showNotice.timer = setTimeout(() => (notice.hidden = true), ms);
    };

    // A session: opened on first use, renewed before its token expires (or
    // when connections keep failing, which is how a refused token looks).
    let opening = null;
    function ensureSession({ refresh = false } = {}) {
      // One request at a time: two at once would open two conversations.
      if (!opening) {
        opening = openSession({ refresh }).finally(() => {
          opening = null;
        });
      }
      return opening;
    }

    async function openSession({ refresh }) {
      if (!options.key) throw new Error('this page has no data-widget-key');
      // Fresh: more than a minute left (or half its life, for short-lived tokens).
      const left = session?.token ? session.expires_at * 1000 - Date.now() : 0;
      const fresh = left > Math.min(60000, ((session?.expires_at || 0) * 1000 - (session?.opened_at || 0)) / 2);
      if (fresh && !refresh) return session;
      const body = session?.token ? { conversation_id: session.conversation_id, token: session.token } : {};
      let opened;
      try {
        opened = await api(options.apiBase, '/api/v1/chat/sessions', { method: 'POST', widgetKey: options.key, body });
      } catch (error) {
        if (session?.token && (error.status === 401 || error.status === 403)) {
          // That conversation cannot be resumed any more: start a new one.
          session = null;
          save();
          resetLog();
          return openSession({ refresh: false });
        }
        throw error;
      }
      lastRefresh = Date.now();
      const sameConversation = session?.conversation_id === opened.conversation_id;
      session = {
        ...(sameConversation ? session : { seen_seq: 0, outbox: [] }),
        conversation_id: opened.conversation_id,
        customer_id: opened.customer_id,
        token: opened.token,
        expires_at: opened.expires_at,
        opened_at: Date.now(),
        websocket_url: opened.websocket_url || defaultSocketUrl(options.apiBase),
      };
      save();
      if (!sameConversation) resetLog();
      return session;
    }

    function resetLog() {
      log?.close();
      log = null;
      rendered.clear();
      list.replaceChildren();
    }

    function ensureLog() {
      if (log || !session) return log;
      log = new ConversationLog({
        conversationId: session.conversation_id,
        readAfter: readAfter,
        onChange: render,
        onError: (error) => console.warn('Switchboard: history not read', error.message),
      });
      return log;
    }

    async function readAfter(afterSeq) {
      const path = `/api/v1/chat/conversations/${encodeURIComponent(session.conversation_id)}/messages?after_seq=${afterSeq}&limit=200`;
      try {
        return await api(options.apiBase, path, { token: session.token });
      } catch (error) {
        if (error.status !== 401) throw error;
        await ensureSession({ refresh: true });
        return api(options.apiBase, path, { token: session.token });
      }
    }

    function connect() {
      if (socket) return;
      ensureLog();
      socket = new ChatSocket({
        connectUrl: async (failures) => {
          // Two failures in a row may be a refused token: renew it (at most
          // every 30 s; the session route is rate-limited per address).
          const stale = failures >= 2 && Date.now() - lastRefresh > 30000;
          const current = await ensureSession({ refresh: stale });
          ensureLog();
          return withToken(current.websocket_url, current.token);
        },
        onState: setStatus,
        onOpen: () => {
          log?.catchUp().then(inferPause);
          outbox.flush(socket, { force: true });
        },
        onFrame,
      });
      socket.start();
      // Messages not acknowledged in time are sent again (same id).
      connect.resend = setInterval(() => socket && outbox.flush(socket), 4000);
    }

    function onFrame(frame) {
      if (!session || (frame.conversation_id && frame.conversation_id !== session.conversation_id)) return;
      switch (frame.type) {
        case 'message': {
          const fresh = ensureLog().accept(frame);
          if (frame.sender_type !== 'customer') stopBotTyping();
          if (frame.sender_type === 'agent') {
            hideAgentTyping();
            // An agent's message pauses the bot (the server pushes no status
            // to the customer then): the newest one says a person is here.
            if (fresh && frame.seq === log.lastSeq) setBotPaused(true);
          }
          break;
        }
        case 'ack': {
          const item = outbox.take(frame.client_message_id);
          if (item && Number.isInteger(frame.seq) && frame.seq > 0) {
            ensureLog().accept({
              type: 'message',
              conversation_id: frame.conversation_id,
              seq: frame.seq,
              message_id: frame.message_id,
              sender_type: 'customer',
              sender_id: session.customer_id,
              client_message_id: frame.client_message_id,
              message: item.message,
              actions: [],
              created_at: Date.now() / 1000,
            });
            if (!botPaused && !frame.duplicate) startBotTyping();
          }
          render();
          break;
        }
        case 'typing':
          if (frame.sender_type === 'agent') {
            if (frame.typing) showAgentTyping();
            else hideAgentTyping();
          }
          break;
        case 'status':
          if (typeof frame.bot_paused === 'boolean') setBotPaused(frame.bot_paused);
          break;
        case 'rate_limited':
          showNotice('You are sending messages quickly — we have them all and will answer shortly.');
          break;
        case 'error':
          if (frame.code === 'unknown_connection') socket?.drop();
          // Only a refusal drops the message; a passing failure (the store
          // away) stays in the outbox and is resent with the same id.
          else if (frame.client_message_id && ['invalid_frame', 'invalid_request', 'payload_too_large', 'forbidden', 'conflict'].includes(frame.code)) {
            const item = outbox.take(frame.client_message_id);
            if (item) showNotice(`Not sent: ${frame.message}`);
            render();
          }
          break;
        default:
          break;
      }
    }

    function setBotPaused(paused, { quiet = false } = {}) {
      if (paused === botPaused) return;
      botPaused = paused;
      if (botPaused) stopBotTyping();
      if (!quiet) showNotice(botPaused ? 'You are now chatting with our team.' : 'Our assistant is back to help.');
    }

    // After a reload the history tells who answered last: an agent (the bot
    // is paused) or the bot. Status changes themselves are not in it.
    function inferPause() {
      const last = log?.list().reverse().find((m) => m.sender_type === 'agent' || m.sender_type === 'bot');
      if (last) setBotPaused(last.sender_type === 'agent', { quiet: true });
    }

    function startBotTyping() {
      clearTimeout(botTypingTimer);
      typing.textContent = 'Assistant is typing…';
      typing.hidden = false;
      typing.dataset.who = 'bot';
      botTypingTimer = setTimeout(stopBotTyping, 20000);
    }
    function stopBotTyping() {
      clearTimeout(botTypingTimer);
      if (typing.dataset.who === 'bot') typing.hidden = true;
    }
    function showAgentTyping() {
      clearTimeout(agentTypingTimer);
      typing.textContent = 'Support team is typing…';
      typing.hidden = false;
      typing.dataset.who = 'agent';
      agentTypingTimer = setTimeout(hideAgentTyping, 8000);
    }
    function hideAgentTyping() {
      clearTimeout(agentTypingTimer);
      if (typing.dataset.who === 'agent') typing.hidden = true;
    }

    // Rendering: one <li> per message number, inserted in order; messages
    // not yet acknowledged after them. Only the newest message keeps its
    // quick replies active.
    const rendered = new Map();
    function render() {
      const nearBottom = isNearBottom();
      const messages = log ? log.list() : [];
      for (const message of messages) {
        if (rendered.has(message.seq)) continue;
        const item = messageItem(message);
        rendered.set(message.seq, item);
        let before = null;
        for (const [seq, node] of rendered) {
          if (seq > message.seq && node.isConnected && (!before || seq < Number(before.dataset.seq))) before = node;
        }
        if (before) list.insertBefore(item, before);
        else list.insertBefore(item, list.querySelector('.pending'));
      }
      for (const [seq, node] of rendered) {
        if (!log || !log.messages.has(seq)) {
          node.remove();
          rendered.delete(seq);
        }
      }
      list.querySelectorAll('.pending').forEach((n) => n.remove());
      for (const item of outbox.items) {
        list.append(
          el(
            'li',
            { class: 'msg from-customer pending', dataset: { clientId: item.client_message_id } },
            el('div', { class: 'bubble' }, item.message),
            el('div', { class: 'meta' }, socket?.state === 'open' ? 'Sending…' : 'Waiting for the connection…'),
          ),
        );
      }
      const last = messages[messages.length - 1];
      list.querySelectorAll('.msg.latest').forEach((n) => n.classList.remove('latest'));
      if (last) rendered.get(last.seq)?.classList.add('latest');
      updateBadge();
      if (nearBottom || messages.length <= 1) scrollToBottom();
    }

    function messageItem(message) {
      return el(
        'li',
        { class: `msg from-${message.sender_type}`, dataset: { seq: message.seq, messageId: message.message_id || '' } },
        el('div', { class: 'bubble' }, message.message),
        // The chosen button goes away: keyboard focus returns to the input.
        renderActions(message, (title) => {
          input.focus();
          sendText(title);
        }),
        el('div', { class: 'meta' }, `${senderLabel(message)} · ${timeOf(message.created_at)}`),
      );
    }

    const scroller = panel.querySelector('.scroller');
    const isNearBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
    const scrollToBottom = () => {
      scroller.scrollTop = scroller.scrollHeight;
    };

    function updateBadge() {
      if (!session || !log) return;
      const top = log.lastSeq;
      if (!panel.hidden && document.visibilityState === 'visible') {
        if (top > (session.seen_seq || 0)) {
          session.seen_seq = top;
          save();
        }
        badge.hidden = true;
        return;
      }
      const unread = log.list().filter((m) => m.seq > (session.seen_seq || 0) && m.sender_type !== 'customer').length;
      badge.textContent = String(unread);
      badge.hidden = unread === 0;
      launcher.setAttribute('aria-label', unread ? `Open chat: ${unread} new` : `Open chat: ${options.title}`);
    }

    async function sendText(text) {
      const message = text.trim();
      if (!message) return;
      try {
        await ensureSession();
      } catch (error) {
        showNotice(error instanceof ApiError && error.status === 429 ? 'Too many new chats from here — try again in a minute.' : 'Cannot reach the chat right now; please try again.');
        return;
      }
      connect();
      outbox.add(session.conversation_id, message);
      stopTyping();
      render();
      scrollToBottom();
      outbox.flush(socket);
    }

    function sendTyping(on) {
      if (!socket || !session) return;
      socket.send({ action: 'typing', conversation_id: session.conversation_id, typing: on });
    }
    function stopTyping() {
      clearTimeout(typingStopTimer);
      if (typingSentAt) sendTyping(false);
      typingSentAt = 0;
    }

    function open() {
      panel.hidden = false;
      host.dataset.open = 'true';
      launcher.setAttribute('aria-expanded', 'true');
      sessionStorage.setItem(openKey, '1');
      input.focus();
      scrollToBottom();
      updateBadge();
      if (!session) {
        ensureSession()
          .then(connect)
          .catch((error) => {
            setStatus('offline');
            showNotice(error instanceof ApiError && error.status === 429 ? 'Too many new chats from here — try again in a minute.' : 'Cannot reach the chat right now.', 0);
          });
      } else connect();
    }
    function close() {
      panel.hidden = true;
      delete host.dataset.open;
      launcher.setAttribute('aria-expanded', 'false');
      sessionStorage.removeItem(openKey);
      launcher.focus();
    }

    launcher.addEventListener('click', () => (panel.hidden ? open() : close()));
    closeButton.addEventListener('click', close);
    panel.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        close();
      }
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const text = input.value;
      input.value = '';
      sendText(text);
      input.focus();
    });
    input.addEventListener('keydown', (event) => {
      // Enter sends, Shift+Enter starts a new line (as chat apps do).
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    input.addEventListener('input', () => {
      if (!session) return;
      // An emptied box is no longer typing.
      if (!input.value.trim()) return stopTyping();
      if (Date.now() - typingSentAt > 3000) {
        sendTyping(true);
        typingSentAt = Date.now();
      }
      clearTimeout(typingStopTimer);
      typingStopTimer = setTimeout(stopTyping, 4000);
    });
    document.addEventListener('visibilitychange', updateBadge);

    // A returning visitor's conversation reconnects at once (replies that
    // came while away show, with the unread count).
    if (session?.token) {
      ensureLog();
      render();
      connect();
    }
    if (options.open || sessionStorage.getItem(openKey)) open();

    return {
      api: {
        open,
        close,
        send: sendText,
        get conversationId() {
          return session?.conversation_id || null;
        },
        // For tests and support: what is shown, and a way to cut the connection.
        debug: {
          renderedSeqs: () => [...list.querySelectorAll('.msg[data-seq]')].map((n) => Number(n.dataset.seq)),
          connection: () => socket?.state || 'stopped',
          dropConnection: () => socket?.drop(),
        },
      },
    };
  }
})();
