// The chat core's ordering and resend rules, without a browser: a
// conversation log fed pushes in every order, with gaps, duplicates,
// skipped numbers and failing reads, against a history that is the truth.
//
// Run: node --test web/tests/chat-core.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConversationLog, Outbox } from '../assets/chat-core.js';

const message = (seq, text = `m${seq}`) => ({ type: 'message', conversation_id: 'c1', seq, message: text });

/** A history holding `seqs`, read `limit` at a time; `fail` makes the next reads throw. */
function server(seqs, { limit = 100 } = {}) {
  const state = { seqs: [...seqs], reads: [], fail: 0 };
  state.readAfter = async (after) => {
    state.reads.push(after);
    await new Promise((resolve) => setTimeout(resolve, 1));
    if (state.fail > 0) {
      state.fail -= 1;
      throw new Error('network');
    }
    const rest = state.seqs.filter((s) => s > after).sort((a, b) => a - b);
    return { messages: rest.slice(0, limit).map((s) => message(s)), has_more: rest.length > limit, last_seq: Math.max(0, ...state.seqs) };
  };
  return state;
}

const seqsOf = (log) => log.list().map((m) => m.seq);
/** Waits until no read is in flight (one may start another). */
const settle = async (log) => {
  for (let i = 0; i < 20; i += 1) {
    if (log.reading) await log.reading;
    await new Promise((resolve) => setTimeout(resolve, 5));
    if (!log.reading) return;
  }
};

test('pushes in order need no read', async () => {
  const history = server([1, 2, 3]);
  const log = new ConversationLog({ conversationId: 'c1', readAfter: history.readAfter });
  for (const s of [1, 2, 3]) log.accept(message(s));
  await settle(log);
  assert.deepEqual(seqsOf(log), [1, 2, 3]);
  assert.deepEqual(history.reads, []);
  assert.equal(log.confirmedSeq, 3);
});

test('a push past a gap reads the history, and each message is kept once', async () => {
  const history = server([1, 2, 3, 4, 5]);
  const log = new ConversationLog({ conversationId: 'c1', readAfter: history.readAfter });
  log.accept(message(1));
  log.accept(message(4));
  log.accept(message(4));
  log.accept(message(5));
  await settle(log);
  assert.deepEqual(seqsOf(log), [1, 2, 3, 4, 5]);
  assert.equal(log.confirmedSeq, 5);
  assert.ok(history.reads.length >= 1 && history.reads.length <= 3, `reads: ${history.reads}`);
});

test('a number the server skipped is not waited for', async () => {
  const history = server([1, 2, 4, 5]);
  const log = new ConversationLog({ conversationId: 'c1', readAfter: history.readAfter });
  log.accept(message(1));
  log.accept(message(2));
  log.accept(message(5));
  await settle(log);
  assert.deepEqual(seqsOf(log), [1, 2, 4, 5]);
  assert.equal(log.confirmedSeq, 5);
});

test('a long history is read page by page', async () => {
  const all = Array.from({ length: 250 }, (_, i) => i + 1);
  const history = server(all, { limit: 100 });
  const log = new ConversationLog({ conversationId: 'c1', readAfter: history.readAfter });
  await log.catchUp();
  assert.deepEqual(seqsOf(log), all);
  assert.deepEqual(history.reads, [0, 100, 200]);
});

test('reads never overlap, and a push during a read is not lost', async () => {
  const history = server([1, 2, 3]);
  const log = new ConversationLog({ conversationId: 'c1', readAfter: history.readAfter });
  const first = log.catchUp();
  const second = log.catchUp();
  assert.equal(first, second, 'one read in flight');
  history.seqs.push(4, 5);
  log.accept(message(5));
  await first;
  await settle(log);
  assert.deepEqual(seqsOf(log), [1, 2, 3, 4, 5]);
});

test('a failed read is retried while a gap remains', async () => {
  const history = server([1, 2, 3]);
  history.fail = 1;
  const errors = [];
  const log = new ConversationLog({ conversationId: 'c1', readAfter: history.readAfter, onError: (e) => errors.push(e.message) });
  log.accept(message(3));
  await new Promise((resolve) => setTimeout(resolve, 1200));
  await settle(log);
  log.close();
  assert.deepEqual(errors, ['network']);
  assert.deepEqual(seqsOf(log), [1, 2, 3]);
});

test("another conversation's messages and frames without a number are ignored", () => {
  const log = new ConversationLog({ conversationId: 'c1', readAfter: async () => ({ messages: [], has_more: false }) });
  assert.equal(log.accept({ ...message(1), conversation_id: 'c2' }), false);
  assert.equal(log.accept({ ...message(1), seq: undefined }), false);
  assert.deepEqual(seqsOf(log), []);
});

test('the outbox resends with the same id until acknowledged', () => {
  const sent = [];
  let open = false;
  const socket = { send: (frame) => open && sent.push(frame) > 0 };
  const saved = [];
  const outbox = new Outbox({ save: (items) => saved.push(items), resendAfterMs: 0 });
  const item = outbox.add('c1', 'hello');
  outbox.flush(socket);
  assert.equal(sent.length, 0, 'nothing goes out while disconnected');
  open = true;
  outbox.flush(socket);
  outbox.flush(socket);
  assert.equal(sent.length, 2);
  assert.equal(sent[0].client_message_id, item.client_message_id);
  assert.equal(sent[1].client_message_id, item.client_message_id, 'a resend is the same message');
  assert.equal(outbox.take(item.client_message_id).message, 'hello');
  outbox.flush(socket);
  assert.equal(sent.length, 2, 'acknowledged: not sent again');
  assert.deepEqual(saved.at(-1), []);
});

test('an outbox restored after a reload sends what was waiting', () => {
  const sent = [];
  const outbox = new Outbox({ items: [{ conversation_id: 'c1', client_message_id: 'abc', message: 'typed before the reload' }] });
  outbox.flush({ send: (frame) => sent.push(frame) > 0 });
  assert.deepEqual(sent, [{ action: 'sendMessage', conversation_id: 'c1', message: 'typed before the reload', client_message_id: 'abc' }]);
});
