// Where the console and the dashboard find the API, and where they keep the
// tokens people sign in with.
//
// Tokens live in sessionStorage only: they last as long as the tab, never
// reach another tab or a later visit, and are never part of a page (the
// server serves the same static files to everyone). The API base and the
// WebSocket URL default to this page's own host (what the local gateway
// serves); a deployment whose pages are not on the API's host sets them in
// `assets/config.json` (`{"api_base": …, "websocket_url": …}`), and a
// person can override them on the sign-in form (kept in localStorage: they
// are not secrets).

import { defaultSocketUrl } from './chat-core.js';

const TOKEN_PREFIX = 'switchboard.token.';

export const tokens = {
  get: (name) => sessionStorage.getItem(TOKEN_PREFIX + name) || '',
  set: (name, value) => {
    if (value) sessionStorage.setItem(TOKEN_PREFIX + name, value);
    else sessionStorage.removeItem(TOKEN_PREFIX + name);
  },
  clear: () => {
    for (const key of Object.keys(sessionStorage)) if (key.startsWith(TOKEN_PREFIX)) sessionStorage.removeItem(key);
  },
};

/** `{apiBase, socketUrl}`: the person's override, else config.json, else this host. */
export async function endpoints() {
  let config = {};
  try {
    const response = await fetch(new URL('config.json', import.meta.url), { cache: 'no-store' });
    if (response.ok) config = await response.json();
  } catch {
    config = {};
  }
  const apiBase = localStorage.getItem('switchboard.apiBase') || config.api_base || location.origin;
  const socketUrl = localStorage.getItem('switchboard.socketUrl') || config.websocket_url || defaultSocketUrl(apiBase);
  return { apiBase, socketUrl };
}

/** Keeps a person's override (an empty value goes back to the default). */
export function saveEndpoints({ apiBase, socketUrl }) {
  for (const [key, value] of [
    ['switchboard.apiBase', apiBase],
    ['switchboard.socketUrl', socketUrl],
  ]) {
    if (value) localStorage.setItem(key, value);
    else localStorage.removeItem(key);
  }
}

/** "3 s ago", "2 min ago" from epoch seconds. */
export function ago(epochSeconds) {
  if (!epochSeconds) return '';
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - epochSeconds));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(epochSeconds * 1000).toLocaleDateString();
}

/** A short-lived message at the bottom of the page. */
export function toast(text, kind = 'info') {
  let area = document.getElementById('toasts');
  if (!area) {
    area = document.createElement('div');
    area.id = 'toasts';
    area.setAttribute('role', 'status');
    area.setAttribute('aria-live', 'polite');
    document.body.append(area);
  }
  const item = document.createElement('p');
  item.className = `toast ${kind}`;
  item.textContent = text;
  area.append(item);
  setTimeout(() => item.remove(), 6000);
}
