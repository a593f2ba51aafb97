// The web UI in a real browser, against the stack scripts/browser-test
// starts (the local gateway with moto, Redis and Postgres): Playwright
// (playwright-core, no browser download) driving Debian's Chromium.
//
// One story, in order, each step bounded: a customer on a phone-sized
// screen chats with the bot by keyboard; an agent in a second browser
// context sees the conversation, takes over and replies; the customer's
// connection is cut while messages are sent both ways, and after it comes
// back every message shows exactly once, in the history's order; a reload
// keeps the conversation; the agent hands back to the bot; the operations
// page shows the message count and a healthy status. A screenshot of each
// page goes to $BROWSER_ARTEFACTS.
//
// Run: node --test web/tests/browser.test.mjs, with SWITCHBOARD_URL,
// ADMIN_ACCESS_TOKEN, AGENT_TOKEN and BROWSER_ARTEFACTS set (the script does).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = process.env.SWITCHBOARD_URL || 'http://127.0.0.1:8000';
const ADMIN_TOKEN = process.env.ADMIN_ACCESS_TOKEN;
const AGENT_TOKEN = process.env.AGENT_TOKEN;
const PANCAKE_TOKEN = process.env.PANCAKE_ACCESS_TOKEN;
const ARTEFACTS = process.env.BROWSER_ARTEFACTS || 'browser-artefacts';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 20_000;

let browser;
let customerContext;
let agentContext;
let customer;
let agent;
const pageErrors = [];
// The customer's WebSockets go through a route the test can cut, as a
// network would: while `cut`, every connection attempt is closed at once
// and no connection reaches the gateway. (Playwright's offline mode blocks
// HTTP but not WebSockets.)
// While `swallow`, the server's frames to the page are lost on the way (an
// acknowledgement that never arrives).
// `sent` keeps every frame the customer's page sent.
const network = { cut: false, swallow: false, live: new Set(), sent: [] };

async function routeCustomerSockets(context) {
  await context.routeWebSocket(/\/ws\?/, (page) => {
    if (network.cut) {
      page.close({ code: 4003, reason: 'network cut by the test' });
      return;
    }
    const server = page.connectToServer();
    server.onMessage((frame) => network.swallow || page.send(frame));
    page.onMessage((frame) => {
      network.sent.push(String(frame));
      server.send(frame);
    });
    const pair = { page, server };
    network.live.add(pair);
    page.onClose((code, reason) => {
      network.live.delete(pair);
      server.close({ code, reason });
    });
    server.onClose((code, reason) => {
      network.live.delete(pair);
      page.close({ code, reason });
    });
  });
}

async function cutNetwork(context) {
  network.cut = true;
  await context.setOffline(true);
  for (const pair of [...network.live]) {
    network.live.delete(pair);
    await pair.server.close({ code: 1001, reason: 'network cut by the test' });
    await pair.page.close({ code: 4003, reason: 'network cut by the test' });
  }
}

async function restoreNetwork(context) {
  network.cut = false;
  await context.setOffline(false);
}

/** Asks the API directly (what the pages are compared with). */
async function history(conversationId) {
  const response = await fetch(`${BASE}/api/v1/chat/conversations/${encodeURIComponent(conversationId)}/messages?after_seq=0&limit=500`, {
    headers: { Authorization: `Bearer ${AGENT_TOKEN}` },
    signal: AbortSignal.timeout(10_000),
  });
  assert.equal(response.status, 200, 'history is readable with the agent token');
  return response.json();
}

async function adminGet(path) {
  const response = await fetch(`${BASE}${path}`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` }, signal: AbortSignal.timeout(10_000) });
  return response.json();
}

/** Polls `check` (an async function returning a truthy value) until it holds. */
async function eventually(what, check, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`timed out after ${timeout} ms waiting for: ${what}`);
}

const shot = (page, name, fullPage = true) => page.screenshot({ path: join(ARTEFACTS, name), fullPage, timeout: WAIT });
const widget = (page, fn, arg) => page.evaluate(fn, arg);
const renderedSeqs = (page) => widget(page, () => window.SwitchboardWidget.debug.renderedSeqs());
const connection = (page) => widget(page, () => window.SwitchboardWidget.debug.connection());
const agentSeqs = (page) => page.$$eval('#messages .msg[data-seq]', (nodes) => nodes.map((n) => Number(n.dataset.seq)));

function watch(page, who) {
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (error) => pageErrors.push(`${who}: ${error.message}`));
}

before(async () => {
  assert.ok(ADMIN_TOKEN && AGENT_TOKEN, 'ADMIN_ACCESS_TOKEN and AGENT_TOKEN are set');
  mkdirSync(ARTEFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    timeout: WAIT,
  });
  customerContext = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true });
  agentContext = await browser.newContext({ viewport: { width: 1280, height: 820 } });
  await routeCustomerSockets(customerContext);
  customer = await customerContext.newPage();
  agent = await agentContext.newPage();
  watch(customer, 'customer');
  watch(agent, 'agent');
});

after(async () => {
  await browser?.close();
});

test('live chat, agent hand-over and operations in a real browser', { timeout: 150_000 }, async (root) => {
  let conversationId;
  const pancakeId = `pancake-${Date.now()}`;
  // Each step builds on the one before: after a failure the rest are skipped.
  let failed = false;
  const t = {
    test: (name, fn) =>
      root.test(name, { skip: failed && 'an earlier step failed' }, async (s) => {
        try {
          await fn(s);
        } catch (error) {
          failed = true;
          throw error;
        }
      }),
  };

  await t.test('the demo page embeds the widget with one tag, usable at 375 px', async () => {
    await customer.goto(`${BASE}/`, { waitUntil: 'load', timeout: WAIT });
    const launcher = customer.getByRole('button', { name: /Open chat/ });
    await launcher.waitFor({ state: 'visible' });
    await shot(customer, '1-demo-page-375.png');
    // By keyboard: the launcher opens the panel and puts the cursor in the box.
    await launcher.focus();
    await customer.keyboard.press('Enter');
    await customer.locator('#sbw-panel').waitFor({ state: 'visible' });
    const focused = await customer.evaluate(() => document.querySelector('#switchboard-widget').shadowRoot.activeElement?.id);
    assert.equal(focused, 'sbw-input', 'the message box has the focus');
    const box = await customer.locator('#sbw-panel').boundingBox();
    assert.ok(box.width <= 375 && box.width >= 360, `the panel fills the phone's width (${box.width} px)`);
    const overflow = await customer.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(overflow <= 375, `no horizontal scrolling (${overflow} px)`);
    // Escape closes it and gives the focus back to the launcher; Enter reopens it.
    await customer.keyboard.press('Escape');
    await customer.locator('#sbw-panel').waitFor({ state: 'hidden' });
    assert.equal(await customer.evaluate(() => document.querySelector('#switchboard-widget').shadowRoot.activeElement?.className), 'launcher');
    await customer.keyboard.press('Enter');
    await customer.locator('#sbw-panel').waitFor({ state: 'visible' });
  });

  await t.test('the customer sends a message and sees the bot answer, quick replies as buttons', async () => {
    await customer.keyboard.type('How much is a check-up?');
    await customer.keyboard.press('Enter');
    await customer.locator('.msg.from-customer[data-seq]', { hasText: 'How much is a check-up?' }).waitFor();
    await customer.locator('.msg.from-bot[data-seq]').first().waitFor();
    const reply = customer.getByRole('button', { name: 'Promotions' });
    await reply.waitFor({ state: 'visible' });
    await shot(customer, '2-customer-chat-375.png', false);
    conversationId = await widget(customer, () => window.SwitchboardWidget.conversationId);
    assert.match(conversationId, /^web-/);
    // A quick reply is a message too, answered in turn.
    await reply.click();
    await customer.locator('.msg.from-customer[data-seq]', { hasText: 'Promotions' }).waitFor();
    await eventually('a second bot answer', async () => (await customer.locator('.msg.from-bot[data-seq]').count()) >= 2);
  });

  await t.test('carousels render as cards, and only http(s) links are links', async () => {
    const cards = await customer.evaluate(async () => {
      const core = await import('/assets/chat-render.js');
      const message = {
        message: 'Our services',
        actions: [{ type: 'send_carousel', data: { elements: [
          { title: 'Check-up', subtitle: '450.000₫', image_url: '/assets/none.png', buttons: [{ title: 'Book', payload: 'BOOK' }, { title: 'Evil', url: 'javascript:alert(1)' }, { title: 'More', url: 'https://example.com/x' }] },
          { title: 'Dental' },
        ] } }],
      };
      const chosen = [];
      const [carousel] = core.renderActions(message, (title) => chosen.push(title));
      carousel.querySelector('button').click();
      return {
        titles: [...carousel.querySelectorAll('.card h3')].map((n) => n.textContent),
        links: [...carousel.querySelectorAll('a')].map((a) => a.href),
        buttons: [...carousel.querySelectorAll('button')].map((b) => b.textContent),
        chosen,
      };
    });
    assert.deepEqual(cards.titles, ['Check-up', 'Dental']);
    assert.deepEqual(cards.links, ['https://example.com/x']);
    assert.deepEqual(cards.buttons, ['Book', 'Evil', 'Choose']);
    assert.deepEqual(cards.chosen, ['Book']);
  });

  await t.test('the console lists a Pancake conversation beside the web one', async () => {
    // A message from a Pancake page, through seed 001's route.
    const response = await fetch(`${BASE}/api/v1/enhanced-handle-message`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${PANCAKE_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({
        conversation_id: pancakeId, message_id: `${pancakeId}-m1`, message_content: 'Xin chào shop', sender_id: 'fb-user-1',
        sender_type: 'user', timestamp: Date.now() / 1000, metadata: { platform: 'facebook', page_id: 'page-1' },
      }),
      signal: AbortSignal.timeout(WAIT),
    });
    assert.equal(response.status, 200);
    await agent.goto(`${BASE}/agent`, { waitUntil: 'load', timeout: WAIT });
    await agent.fill('#agent-token', AGENT_TOKEN);
    await agent.fill('#admin-token', ADMIN_TOKEN);
    await agent.click('#sign-in button[type=submit]');
    await agent.locator('#connection[data-state=open]').waitFor();
    const item = agent.locator(`.conversation-item[data-conversation-id="${pancakeId}"]`);
    await item.locator('.badge.channel', { hasText: 'Pancake · page page-1' }).waitFor({ timeout: 30_000 });
    await item.locator('.item-last', { hasText: 'Assistant:' }).waitFor();
  });

  await t.test('an agent in another browser sees the conversation, takes over and replies', async () => {
    const item = agent.locator(`.conversation-item[data-conversation-id="${conversationId}"]`);
    await item.waitFor({ timeout: 30_000 });
    await item.click();
    await agent.locator('#messages .msg.from-customer', { hasText: 'How much is a check-up?' }).waitFor();
    await agent.locator('#messages .msg.from-bot').first().waitFor();

    // The customer's typing shows in the console; nothing is sent.
    await customer.locator('#sbw-input').pressSequentially('typing…', { delay: 20 });
    await agent.locator('#typing', { hasText: 'Customer is typing' }).waitFor();
    await customer.locator('#sbw-input').press('Control+A');
    await customer.locator('#sbw-input').press('Backspace');
    await agent.locator('#typing').waitFor({ state: 'hidden' });

    await agent.click('#take-over');
    await agent.locator('#bot-state[data-state=paused]').waitFor();
    await agent.locator('#messages .msg.from-agent[data-seq]', { hasText: 'take it from here' }).waitFor();
    await agent.fill('#reply-text', 'Hi, Alice here: check-ups are 10% off this week.');
    await agent.press('#reply-text', 'Enter');
    await agent.locator('#messages .msg.from-agent[data-seq]', { hasText: 'Alice here' }).waitFor();
    await shot(agent, '3-agent-console.png');
  });

  await t.test("the customer sees the agent's reply live", async () => {
    await customer.locator('.msg.from-agent[data-seq]', { hasText: 'Alice here' }).waitFor();
    await customer.locator('.notice', { hasText: 'chatting with our team' }).waitFor();
  });

  await t.test('a cut connection loses and doubles nothing', async () => {
    assert.equal(network.live.size, 1, 'the customer has one connection');
    // A message the gateway logs but whose acknowledgement is lost: the
    // widget must send it again after the cut, and it must show once.
    network.swallow = true;
    await customer.locator('#sbw-input').fill('Sent as the line went down');
    await customer.locator('#sbw-input').press('Enter');
    await eventually('the gateway logged it', async () => (await history(conversationId)).messages.some((m) => m.message === 'Sent as the line went down'));
    assert.equal(await customer.locator('.msg.pending', { hasText: 'Sent as the line went down' }).count(), 1, 'not acknowledged yet');
    await cutNetwork(customerContext);
    network.swallow = false;
    await eventually('the widget notices the cut', async () => (await connection(customer)) !== 'open', 5_000);
    // Both sides write while the customer is away.
    for (const text of ['While you were away (1)', 'While you were away (2)']) {
      await agent.fill('#reply-text', text);
      await agent.press('#reply-text', 'Enter');
      await agent.locator('#messages .msg.from-agent[data-seq]', { hasText: text }).waitFor();
    }
    await customer.locator('#sbw-input').fill('Sent while offline');
    await customer.locator('#sbw-input').press('Enter');
    await customer.locator('.msg.pending', { hasText: 'Sent while offline' }).waitFor();
    assert.equal(network.live.size, 0, 'no connection reached the gateway while cut');
    assert.equal(await customer.locator('.msg', { hasText: 'While you were away' }).count(), 0, 'nothing arrived while offline');

    await restoreNetwork(customerContext);
    await eventually('the widget reconnects', async () => (await connection(customer)) === 'open', 30_000);
    await customer.locator('.msg.from-customer[data-seq]', { hasText: 'Sent while offline' }).waitFor();
    await agent.locator('#messages .msg.from-customer[data-seq]', { hasText: 'Sent while offline' }).waitFor();
    const truth = await eventually('the customer shows what the history holds', async () => {
      const log = await history(conversationId);
      const shown = await renderedSeqs(customer);
      return JSON.stringify(shown) === JSON.stringify(log.messages.map((m) => m.seq)) ? log : null;
    });
    const seqs = truth.messages.map((m) => m.seq);
    assert.equal(new Set(seqs).size, seqs.length, 'no number twice in the history');
    const shown = await customer.$$eval('.msg[data-seq]', (nodes) => nodes.map((n) => [Number(n.dataset.seq), n.querySelector('.bubble').textContent]));
    assert.deepEqual(shown, truth.messages.map((m) => [m.seq, m.message]), 'every message once, in order, with its text');
    const sends = network.sent.map((f) => JSON.parse(f)).filter((f) => f.action === 'sendMessage' && f.message === 'Sent as the line went down');
    assert.ok(sends.length >= 2, `sent again after the cut (${sends.length} sends)`);
    assert.equal(new Set(sends.map((f) => f.client_message_id)).size, 1, 'every send with the same client_message_id');
    for (const text of ['Sent as the line went down', 'While you were away (1)', 'While you were away (2)', 'Sent while offline']) {
      assert.equal(truth.messages.filter((m) => m.message === text).length, 1, `"${text}" stored once`);
    }
    assert.equal(await customer.locator('.msg.pending').count(), 0, 'nothing left unsent');
    await eventually('the agent shows the same', async () => JSON.stringify(await agentSeqs(agent)) === JSON.stringify(seqs));
    await shot(customer, '4-customer-after-reconnect-375.png', false);
  });

  await t.test('a reload keeps the conversation', async () => {
    const before = await renderedSeqs(customer);
    await customer.reload({ waitUntil: 'load', timeout: WAIT });
    await customer.locator('#sbw-panel').waitFor({ state: 'visible' });
    assert.equal(await widget(customer, () => window.SwitchboardWidget.conversationId), conversationId);
    await eventually('the same messages after the reload', async () => JSON.stringify(await renderedSeqs(customer)) === JSON.stringify(before));
    await eventually('connected again', async () => (await connection(customer)) === 'open');
  });

  await t.test('resume bot hands the conversation back to the bot', async () => {
    await agent.click('#resume-bot');
    await agent.locator('#bot-state[data-state=bot]').waitFor();
    const answers = await customer.locator('.msg.from-bot[data-seq]').count();
    await customer.locator('#sbw-input').fill('Hello again');
    await customer.locator('#sbw-input').press('Enter');
    await eventually('the bot answers again', async () => (await customer.locator('.msg.from-bot[data-seq]').count()) > answers);
  });

  await t.test('the operations page shows the message count and a healthy status', async () => {
    const ops = await agentContext.newPage();
    watch(ops, 'ops');
    await ops.goto(`${BASE}/ops`, { waitUntil: 'load', timeout: WAIT });
    await ops.fill('#admin-token', ADMIN_TOKEN);
    await ops.click('#sign-in button[type=submit]');
    await ops.locator('#overall[data-state=healthy]').waitFor();
    for (const dependency of ['Redis', 'Postgres', 'AI', 'DynamoDB']) {
      await ops.locator(`.tile[data-dependency="${dependency}"][data-level=ok]`).waitFor();
    }
    const shown = await eventually('the page shows the stored message count', async () => {
      const text = (await ops.locator('#figure-messages').textContent()) || '';
      const stats = await adminGet('/api/v1/admin/stats');
      const count = Number(text);
      return count > 0 && count === stats.postgres_stats.messages ? count : null;
    });
    // The customer's and the agent's messages are stored as messages (bot answers as answers).
    const stored = (await history(conversationId)).messages.filter((m) => m.sender_type !== 'bot').length;
    assert.ok(shown >= stored, `${shown} messages shown, at least the conversation's ${stored}`);
    // Two samples make a line (a flat one has no height: attached, not "visible").
    await ops.locator('#chart-queue polyline').first().waitFor({ state: 'attached', timeout: 15_000 });
    await shot(ops, '5-ops-dashboard.png');
    await ops.close();
  });

  assert.deepEqual(pageErrors, [], 'no script error on any page');
});
