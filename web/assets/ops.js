// The operations dashboard: health per dependency, the figures operators
// ask for first, charts over time, stuck conversations with a cancel
// button, and the cache forms. Every 5 s it reads `GET
// /api/v1/admin/health`, `/api/v1/admin/stats` and `/api/cache/metrics`
// with the admin token (from this tab's session storage) and keeps the
// samples of the last 15 minutes in session storage too, so a reload keeps
// the charts.
//
// Cache hit rates are drawn per interval (hits and misses since the sample
// before), not the since-start rate the API reports, which moves too slowly
// to show a change; an interval without reads is a gap.

import { api } from './chat-core.js';
import { el } from './chat-render.js';
import { tokens, endpoints, saveEndpoints, ago, toast } from './settings.js';
import { lineChart } from './chart.js';

const REFRESH_MS = 5000;
const KEEP_SAMPLES = 180;
const SAMPLES_KEY = 'switchboard.ops.samples';
const $ = (id) => document.getElementById(id);
const ms = (v) => `${v < 10 ? Number(v.toFixed(1)) : Math.round(v)} ms`;

const state = { apiBase: '', token: '', timer: null, paused: false, samples: loadSamples(), previous: null };

init();

async function init() {
  Object.assign(state, { apiBase: (await endpoints()).apiBase });
  $('api-base').value = localStorage.getItem('switchboard.apiBase') || '';
  $('sign-in').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('pause').addEventListener('click', () => {
    state.paused = !state.paused;
    $('pause').textContent = state.paused ? 'Resume' : 'Pause';
    $('pause').setAttribute('aria-pressed', String(state.paused));
  });
  $('invalidate').addEventListener('submit', invalidate);
  $('warmup').addEventListener('submit', warmup);
  const saved = tokens.get('admin');
  if (saved) start(saved);
  else showSignIn();
}

function showSignIn() {
  $('sign-in').hidden = false;
  $('dashboard').hidden = true;
  $('sign-out').hidden = true;
  $('pause').hidden = true;
  $('admin-token').focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $('admin-token').value.trim();
  saveEndpoints({ apiBase: $('api-base').value.trim(), socketUrl: localStorage.getItem('switchboard.socketUrl') || '' });
  state.apiBase = (await endpoints()).apiBase;
  try {
    await api(state.apiBase, '/api/cache/health', { token });
  } catch (error) {
    // 503 is a sick cache, not a wrong token.
    if (error.status !== 503) {
      $('sign-in-error').textContent = error.status === 401 ? 'That token was refused.' : `Cannot reach the API (${error.message}).`;
      return;
    }
  }
  tokens.set('admin', token);
  $('admin-token').value = '';
  $('sign-in-error').textContent = '';
  start(token);
}

function signOut() {
  tokens.clear();
  clearInterval(state.timer);
  state.token = '';
  showSignIn();
}

function start(token) {
  state.token = token;
  $('sign-in').hidden = true;
  $('dashboard').hidden = false;
  $('sign-out').hidden = false;
  $('pause').hidden = false;
  draw();
  refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => state.paused || refresh(), REFRESH_MS);
}

function loadSamples() {
  try {
    return JSON.parse(sessionStorage.getItem(SAMPLES_KEY)) || [];
  } catch {
    return [];
  }
}

/** A call whose error body still counts (health answers 503 with its report). */
async function read(path) {
  try {
    return await api(state.apiBase, path, { token: state.token, timeoutMs: 8000 });
  } catch (error) {
    if (error.status === 401) {
      toast('The admin token was refused: sign in again.', 'error');
      signOut();
    }
    if (error.body && error.status === 503) return error.body;
    throw error;
  }
}

async function refresh() {
  const [health, stats, metrics] = await Promise.allSettled([read('/api/v1/admin/health'), read('/api/v1/admin/stats'), read('/api/cache/metrics')]);
  if (!state.token) return;
  const value = (r) => (r.status === 'fulfilled' ? r.value : null);
  const sample = { t: Date.now(), health: value(health), stats: value(stats), metrics: value(metrics) };
  renderHealth(sample.health, health.reason);
  renderFigures(sample.stats, sample.metrics);
  renderStuck(sample.health);
  state.samples.push(compact(sample));
  state.samples = state.samples.slice(-KEEP_SAMPLES);
  try {
    sessionStorage.setItem(SAMPLES_KEY, JSON.stringify(state.samples));
  } catch {
    // Storage full: the charts keep what is in memory.
  }
  draw();
  const failed = [health, stats, metrics].filter((r) => r.status === 'rejected');
  $('refreshed').textContent = failed.length ? `Some figures could not be read (${failed[0].reason.message})` : `Updated ${new Date().toLocaleTimeString()}`;
}

/** What the charts need of one sample (kept small for session storage). */
function compact({ t, health, stats, metrics }) {
  const checks = health?.checks || {};
  const kinds = {};
  for (const [kind, m] of Object.entries(metrics?.kinds || {})) kinds[kind] = [m.hits, m.misses];
  return {
    t,
    queue: stats?.queue || health?.queue || null,
    kinds,
    ai: stats?.ai ? [stats.ai.avg_processing_time_ms_24h, stats.ai.in_flight] : null,
    deps: Object.fromEntries(['redis', 'postgres', 'dynamodb', 'ai'].map((d) => [d, checks[d]?.latency_ms ?? null])),
  };
}

function draw() {
  const s = state.samples;
  const series = (name, pick) => ({ name, points: s.map((x) => [x.t, pick(x)]) });
  lineChart($('chart-queue'), {
    title: 'Queue',
    series: [series('depth', (x) => x.queue?.depth ?? null), series('pending (lag)', (x) => x.queue?.pending ?? null), series('dead letters', (x) => x.queue?.dead_letters ?? null)],
  });
  const kinds = [...new Set(s.flatMap((x) => Object.keys(x.kinds || {})))].sort();
  lineChart($('chart-cache'), {
    title: 'Cache hit rate per kind',
    yMax: 1,
    format: (v) => `${Math.round(v * 100)} %`,
    series: kinds.map((kind) => ({
      name: kind,
      points: s.map((x, i) => {
        const now = x.kinds?.[kind];
        const before = i > 0 ? s[i - 1].kinds?.[kind] : null;
        if (!now || !before) return [x.t, null];
        const hits = now[0] - before[0];
        const reads = hits + (now[1] - before[1]);
        return [x.t, reads > 0 && hits >= 0 ? hits / reads : null];
      }),
    })),
  });
  lineChart($('chart-ai'), {
    title: 'AI latency',
    format: ms,
    series: [series('average, 24 h', (x) => x.ai?.[0] ?? null), series('health check', (x) => x.deps?.ai ?? null)],
  });
  lineChart($('chart-deps'), {
    title: 'Dependency latency',
    format: ms,
    series: ['redis', 'postgres', 'dynamodb'].map((d) => series(d, (x) => x.deps?.[d] ?? null)),
  });
}

function level(status) {
  if (['connected', 'reachable', 'embedded', 'healthy', 'closed'].includes(status)) return 'ok';
  if (['not_configured'].includes(status)) return 'none';
  if (['degraded', 'half_open', 'open'].includes(status)) return 'warn';
  return 'bad';
}

function renderHealth(health, error) {
  const overall = $('overall');
  if (!health) {
    overall.textContent = `unreachable (${error?.message || 'no answer'})`;
    overall.dataset.state = 'unhealthy';
    $('tiles').replaceChildren();
    return;
  }
  overall.textContent = health.status;
  overall.dataset.state = health.status;
  $('backend').textContent = `storage: ${health.storage_backend || '?'} · ${health.statistics?.active_ai_tasks ?? 0} AI calls in flight`;
  const checks = health.checks || {};
  const tile = (name, status, detail, lvl = level(status)) =>
    el('div', { class: 'tile', dataset: { level: lvl, dependency: name } }, el('div', { class: 'name' }, name), el('div', { class: 'value' }, status ?? '?'), detail ? el('div', { class: 'detail' }, detail) : null);
  const ms = (c) => (c?.latency_ms !== undefined ? `${Number(c.latency_ms).toFixed(1)} ms` : '');
  const memory = checks.redis?.memory;
  const queue = health.queue;
  $('tiles').replaceChildren(
    tile('Redis', checks.redis?.status, ms(checks.redis)),
    tile('Postgres', checks.postgres?.status, ms(checks.postgres)),
    tile('AI', checks.ai?.status, [checks.ai?.provider, ms(checks.ai)].filter(Boolean).join(' · ')),
    tile('DynamoDB', checks.dynamodb?.status, ms(checks.dynamodb)),
    tile('Circuit breaker', health.circuit_breaker?.state, `${health.circuit_breaker?.trips ?? 0} trips`),
    memory ? tile('Redis memory', memory.used_memory_human, memory.warning || `policy ${memory.maxmemory_policy}`, memory.warning ? 'warn' : memory.maxmemory_policy === 'noeviction' ? 'ok' : 'warn') : null,
    queue ? tile('Queue', `${queue.depth} entries`, `${queue.pending} pending · ${queue.dead_letters} dead`, queue.dead_letters > 0 ? 'warn' : 'ok') : tile('Queue', 'unknown', 'Redis unreachable', 'bad'),
  );
}

function renderFigures(stats, metrics) {
  if (!stats) return;
  const failures = Object.values(stats.security?.auth_failures || {}).reduce((a, b) => a + b, 0);
  const rate = metrics?.overall?.hit_rate;
  const figure = (id, label, value) => el('div', { dataset: { figure: id } }, el('dt', {}, label), el('dd', { id: `figure-${id}` }, value ?? '–'));
  $('figures').replaceChildren(
    figure('messages', 'Messages', stats.postgres_stats?.messages),
    figure('conversations', 'Conversations', stats.conversations?.total),
    figure('recent', 'Active in 24 h', stats.conversations?.recent),
    figure('paused', 'With an agent', stats.conversations?.bot_paused),
    figure('processing', 'Answering now', stats.conversations?.active_processing),
    figure('answers', 'AI answers, 24 h', stats.ai?.responses_24h),
    figure('ai-errors', 'AI errors, 24 h', stats.ai?.errors_24h),
    figure('ai-latency', 'AI latency, 24 h', stats.ai?.avg_processing_time_ms_24h != null ? `${Math.round(stats.ai.avg_processing_time_ms_24h)} ms` : '–'),
    figure('hit-rate', 'Cache hit rate', rate != null ? `${Math.round(rate * 100)} %` : '–'),
    figure('dead-letters', 'Dead letters stored', stats.queue?.dead_letters_recorded),
    figure('auth-failures', 'Refused credentials', failures),
    figure('memory', 'Redis memory', stats.redis_stats?.used_memory_human),
  );
}

function renderStuck(health) {
  const stuck = health?.stuck_conversations || [];
  $('stuck-empty').hidden = stuck.length > 0;
  $('stuck').replaceChildren(
    ...stuck.map((s) => {
      const button = el('button', { type: 'button', class: 'small secondary' }, 'Cancel');
      button.addEventListener('click', () => cancel(s.conversation_id, button));
      return el('tr', { dataset: { conversationId: s.conversation_id } }, el('td', {}, s.conversation_id), el('td', {}, ago(s.owed_since)), el('td', {}, s.reason.replaceAll('_', ' ')), el('td', {}, button));
    }),
  );
}

/** Two clicks: the first arms the button, the second cancels (no dialogs). */
async function cancel(id, button) {
  if (!button.dataset.armed) {
    button.dataset.armed = '1';
    button.textContent = 'Confirm cancel';
    button.classList.add('danger');
    setTimeout(() => {
      delete button.dataset.armed;
      button.textContent = 'Cancel';
      button.classList.remove('danger');
    }, 5000);
    return;
  }
  button.disabled = true;
  try {
    await api(state.apiBase, `/api/v1/admin/conversations/${encodeURIComponent(id)}/cancel`, { method: 'POST', token: state.token, body: {} });
    toast(`Cancelled ${id}: its owed messages are being answered.`);
    refresh();
  } catch (error) {
    toast(`Cancel failed: ${error.message}`, 'error');
    button.disabled = false;
  }
}

async function invalidate(event) {
  event.preventDefault();
  const type = $('invalidate-type').value;
  const id = $('invalidate-id').value.trim();
  const field = { assistant: 'assistantId', thread: 'threadId', integration: 'integration' }[type];
  const body = { type };
  if (field) body[field] = id;
  try {
    const result = await api(state.apiBase, '/api/cache/invalidate', { method: 'POST', token: state.token, body });
    $('invalidate-result').textContent = `Invalidated: ${JSON.stringify(result.invalidated)}`;
  } catch (error) {
    $('invalidate-result').textContent = `Refused: ${error.message}`;
  }
}

async function warmup(event) {
  event.preventDefault();
  const ids = $('warmup-ids').value.split(',').map((s) => s.trim()).filter(Boolean);
  try {
    const result = await api(state.apiBase, '/api/cache/warmup', { method: 'POST', token: state.token, body: { assistantIds: ids } });
    $('warmup-result').textContent = `Warmed ${JSON.stringify(result.warmed)} in ${Math.round(result.elapsed_ms)} ms${result.unknown?.length ? `; unknown: ${result.unknown.join(', ')}` : ''}`;
  } catch (error) {
    $('warmup-result').textContent = `Refused: ${error.message}`;
  }
}
