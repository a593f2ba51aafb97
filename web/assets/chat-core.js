// Live chat's client core, shared by the customer widget and the agent
// console: the HTTP calls, one WebSocket that reconnects by itself, a
// conversation's log ordered by sequence number, and the outbox of messages
// not yet acknowledged.
//
// The server's rule is that pushes are hints and the history is the truth
// (README, "Live chat"). So a log never trusts a push to be complete: a
// push past a gap, every (re)connection and every failed read make it read
// the history after the last number it is sure of, and every message is kept
// once, by its number. An unacknowledged message is sent again with the
// same `client_message_id` after a reconnect, which the server answers as a
// duplicate (same number) rather than storing a second message.

/** An HTTP error with the server's status and body. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/**
 * One JSON call: `token` as a bearer token, `widgetKey` as `X-Widget-Key`.
 * No cookies are sent or needed; a call that takes longer than `timeoutMs`
 * is abandoned (a status 0 ApiError, like a network failure).
 */
export async function api(base, path, { method = 'GET', token, widgetKey, body, timeoutMs = 10000 } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (widgetKey) headers['X-Widget-Key'] = widgetKey;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let response;
  try {
    response = await fetch(new URL(path, base), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      credentials: 'omit',
      cache: 'no-store',
    });
  } catch (error) {
    throw new ApiError(0, { error: { message: `network: ${error.message}` } }, null);
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data, response.headers.get('Retry-After'));
  return data;
}

/** A fresh id for a message (works outside secure contexts too). */
export function newId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The WebSocket URL beside an HTTP API base (`/ws` on the same host). */
export function defaultSocketUrl(apiBase) {
  const url = new URL('/ws', apiBase);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

/** `url` with `?token=` set (browsers cannot set headers on a WebSocket). */
export function withToken(url, token) {
  const u = new URL(url);
  u.searchParams.set('token', token);
  return u.href;
}

/**
 * One WebSocket that stays connected: reconnects after a drop with a
 * jittered exponential backoff (0.25 s, then 0.5 s doubling to 15 s), at
 * once when the browser comes back online, and treats a connection that
 * does not open in time or stops answering pings as dropped.
 *
 * - `connectUrl(failures)`: the URL for the next attempt (async, so a
 *   caller can refresh its token first; `failures` counts the attempts that
 *   failed in a row). A throw counts as a failed attempt.
 * - `onFrame(frame)`, `onOpen()`, `onState(state)`: state is `connecting`,
 *   `open`, `reconnecting`, `offline` or `stopped`.
 */
export class ChatSocket {
  constructor({ connectUrl, onFrame, onOpen, onState, pingEveryMs = 25000, pongWithinMs = 10000, openWithinMs = 10000 }) {
    Object.assign(this, { connectUrl, onFrame, onOpen, onState, pingEveryMs, pongWithinMs, openWithinMs });
    this.ws = null;
    this.failures = 0;
    this.stopped = true;
    this.state = 'stopped';
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.online = () => {
      if (!this.stopped && !this.ws) {
        clearTimeout(this.retryTimer);
        this.connect();
      }
    };
    // A network change may leave a socket that looks open but is dead: probe it.
    this.offline = () => this.ping();
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    addEventListener('online', this.online);
    addEventListener('offline', this.offline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    removeEventListener('online', this.online);
    removeEventListener('offline', this.offline);
    clearTimeout(this.retryTimer);
    this.stopPing();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'bye');
    this.setState('stopped');
  }

  /** Sends a frame now; false when not connected (the caller keeps it). */
  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  /** Closes the connection as a network cut would; it reconnects by itself. */
  drop() {
    if (this.ws) this.ws.close(4000, 'dropped');
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState?.(state);
  }

  async connect() {
    if (this.stopped) return;
    this.setState(this.failures === 0 && this.state !== 'reconnecting' ? 'connecting' : 'reconnecting');
    let url;
    try {
      url = await this.connectUrl(this.failures);
    } catch {
      this.failures += 1;
      this.retry();
      return;
    }
    if (this.stopped || this.ws) return;
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      this.failures += 1;
      this.retry();
      return;
    }
    this.ws = ws;
    let opened = false;
    // Only a connection that stays up a while resets the backoff: one that
    // a server accepts and closes at once must not be retried 4 times a second.
    let stable = false;
    let stableTimer = null;
    const openTimer = setTimeout(() => {
      if (!opened) ws.close();
    }, this.openWithinMs);
    ws.onopen = () => {
      opened = true;
      clearTimeout(openTimer);
      stableTimer = setTimeout(() => {
        stable = true;
        this.failures = 0;
      }, 3000);
      this.setState('open');
      this.startPing();
      this.onOpen?.();
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === 'pong') clearTimeout(this.pongTimer);
      this.onFrame?.(frame);
    };
    ws.onerror = () => {};
    ws.onclose = () => {
      clearTimeout(openTimer);
      clearTimeout(stableTimer);
      if (this.ws !== ws) return;
      this.ws = null;
      this.stopPing();
      if (this.stopped) return;
      if (!opened || !stable) this.failures += 1;
      this.retry();
    };
  }

  retry() {
    if (this.stopped) return;
    const n = this.failures;
    const delay = n === 0 ? 250 : Math.min(15000, 500 * 2 ** (n - 1)) * (0.5 + Math.random() / 2);
    this.setState(navigator.onLine === false ? 'offline' : 'reconnecting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  ping() {
    if (!this.send({ action: 'ping' })) return;
    clearTimeout(this.pongTimer);
    const ws = this.ws;
    this.pongTimer = setTimeout(() => {
      if (this.ws === ws && ws) ws.close(4001, 'no pong');
    }, this.pongWithinMs);
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => this.ping(), this.pingEveryMs);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}

/**
 * One conversation's messages, each once, by sequence number.
 *
 * `confirmedSeq` is the number up to which the log is complete: every
 * message at or below it is in `messages`, or was never written (a number
 * can be skipped). A message above `confirmedSeq + 1` means a gap, and the
 * log reads the history after `confirmedSeq` (`readAfter(n)` →
 * `{messages, has_more}`) until it has caught up. Reads never overlap; a
 * failed read is retried with a backoff while a gap remains.
 */
export class ConversationLog {
  constructor({ conversationId, readAfter, onChange, onError }) {
    Object.assign(this, { conversationId, readAfter, onChange, onError });
    this.messages = new Map();
    this.confirmedSeq = 0;
    this.reading = null;
    this.again = false;
    this.retries = 0;
    this.retryTimer = null;
    this.closed = false;
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
  }

  /** The messages in order. */
  list() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  get lastSeq() {
    let top = this.confirmedSeq;
    for (const seq of this.messages.keys()) top = Math.max(top, seq);
    return top;
  }

  /** A pushed (or acknowledged) message; catches up if it leaves a gap. */
  accept(frame) {
    if (this.closed || frame.conversation_id !== this.conversationId || !Number.isInteger(frame.seq)) return false;
    if (this.messages.has(frame.seq)) return false;
    this.messages.set(frame.seq, frame);
    this.advance();
    if (frame.seq > this.confirmedSeq) this.catchUp();
    this.onChange?.(this);
    return true;
  }

  advance() {
    while (this.messages.has(this.confirmedSeq + 1)) this.confirmedSeq += 1;
  }

  /** Reads what the log lacks; resolves when it is complete (or failed). */
  catchUp() {
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = this.read().finally(() => {
      this.reading = null;
    });
    return this.reading;
  }

  async read() {
    let rounds = 0;
    do {
      this.again = false;
      let page;
      let pages = 0;
      do {
        try {
          page = await this.readAfter(this.confirmedSeq);
        } catch (error) {
          this.onError?.(error);
          this.retryLater();
          return;
        }
        if (this.closed) return;
        let top = this.confirmedSeq;
        for (const message of page.messages || []) {
          if (!this.messages.has(message.seq)) this.messages.set(message.seq, message);
          top = Math.max(top, message.seq);
        }
        // The history is the truth: a number it skipped below what it
        // returned was never written.
        this.confirmedSeq = top;
        this.advance();
        this.onChange?.(this);
        pages += 1;
      } while (page.has_more && pages < 100);
      // Pushed while the read ran, above what it returned: read once more.
      if (this.lastSeq > this.confirmedSeq) this.again = true;
      rounds += 1;
    } while (this.again && rounds < 5);
    this.retries = 0;
    if (this.lastSeq > this.confirmedSeq) this.retryLater();
  }

  retryLater() {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    const delay = Math.min(15000, 1000 * 2 ** this.retries);
    this.retries += 1;
    this.retryTimer = setTimeout(() => this.catchUp(), delay);
  }
}

/**
 * Messages typed and not yet acknowledged, in order. Each keeps its
 * `client_message_id`, so sending it again (after a reconnect, or when no
 * acknowledgement came) is a duplicate on the server, never a second message.
 * `save(items)` persists them (the widget keeps them across a reload).
 */
export class Outbox {
  constructor({ items = [], save, resendAfterMs = 8000 } = {}) {
    this.items = items.map((i) => ({ ...i, sentAt: 0 }));
    this.save = save;
    this.resendAfterMs = resendAfterMs;
  }

  add(conversationId, message) {
    const item = { conversation_id: conversationId, client_message_id: newId(), message, sentAt: 0, error: null };
    this.items.push(item);
    this.persist();
    return item;
  }

  /** The item an acknowledgement (or an error frame) names, removed. */
  take(clientMessageId) {
    const index = this.items.findIndex((i) => i.client_message_id === clientMessageId);
    if (index < 0) return null;
    const [item] = this.items.splice(index, 1);
    this.persist();
    return item;
  }

  /** Sends what is due: never sent, or sent without an ack for a while. */
  flush(socket, { force = false } = {}) {
    const now = Date.now();
    for (const item of this.items) {
      if (!force && item.sentAt && now - item.sentAt < this.resendAfterMs) continue;
      const sent = socket.send({
        action: 'sendMessage',
        conversation_id: item.conversation_id,
        message: item.message,
        client_message_id: item.client_message_id,
      });
      if (!sent) return;
      item.sentAt = now;
    }
  }

  persist() {
    this.save?.(this.items.map(({ conversation_id, client_message_id, message }) => ({ conversation_id, client_message_id, message })));
  }
}
