// Drawing chat messages, shared by the customer widget and the agent
// console: DOM helpers, who a sender is, and a bot answer's extras (quick
// replies as buttons, carousels as cards). Text is only ever set as text
// (never parsed as HTML), and only http(s) URLs become links or images.

/** Who a sender type is, for people. */
export function senderLabel(message, { agentView = false } = {}) {
  switch (message.sender_type) {
    case 'customer':
      return agentView ? 'Customer' : 'You';
    case 'agent':
      return agentView ? `Agent ${message.sender_id || ''}`.trim() : 'Support team';
    case 'bot':
      return 'Assistant';
    case 'page':
      return 'Page (Pancake)';
    default:
      return message.sender_type || 'System';
  }
}

/** A time of day from epoch seconds. */
export function timeOf(epochSeconds) {
  if (!epochSeconds) return '';
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/** Creates an element: el('li', {class: 'x', dataset: {seq: 1}}, child, 'text'). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** Only http(s) URLs become links or images (never `javascript:`). */
export function safeUrl(value) {
  try {
    const url = new URL(value, location.href);
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * A bot answer's extras as elements: extra `send_message` texts, quick
 * replies (buttons; `choose(title)` is called with the chosen one's title)
 * and carousels (cards with an image, a title, a subtitle and buttons: a
 * button with a URL is a link, one with a payload chooses its title).
 * `actions` is the message's `[{type, data}]` (seed 001's shape).
 */
export function renderActions(message, choose, { interactive = true } = {}) {
  const nodes = [];
  for (const action of Array.isArray(message.actions) ? message.actions : []) {
    const data = action?.data || {};
    if (action.type === 'send_message' && data.message && data.message !== message.message) {
      nodes.push(el('div', { class: 'bubble extra' }, data.message));
    } else if (action.type === 'send_quick_replies') {
      const options = (Array.isArray(data.quick_replies) ? data.quick_replies : [])
        .map((o) => (typeof o === 'string' ? o : o?.title))
        .filter((t) => typeof t === 'string' && t.trim());
      if (options.length) {
        nodes.push(
          el(
            'div',
            { class: 'quick-replies', role: 'group', 'aria-label': 'Suggested replies' },
            options.map((title) =>
              el('button', { type: 'button', class: 'quick-reply', disabled: !interactive, onclick: () => choose(title) }, title),
            ),
          ),
        );
      }
    } else if (action.type === 'send_carousel') {
      const elements = Array.isArray(data.elements) ? data.elements : [];
      if (!elements.length) continue;
      nodes.push(
        el(
          'div',
          { class: 'carousel', role: 'list', 'aria-label': data.message || 'Options' },
          elements.map((item) => {
            const image = safeUrl(item.image_url || item.image || '');
            const buttons = (Array.isArray(item.buttons) ? item.buttons : []).map((button) => {
              const title = button?.title || button?.payload || 'Open';
              const href = button?.url ? safeUrl(button.url) : null;
              return href
                ? el('a', { class: 'card-button', href, target: '_blank', rel: 'noopener noreferrer' }, title)
                : el('button', { type: 'button', class: 'card-button', disabled: !interactive, onclick: () => choose(title) }, title);
            });
            if (!buttons.length && interactive) {
              buttons.push(el('button', { type: 'button', class: 'card-button', onclick: () => choose(item.title) }, 'Choose'));
            }
            return el(
              'article',
              { class: 'card', role: 'listitem' },
              image ? el('img', { src: image, alt: '', loading: 'lazy' }) : null,
              el('h3', {}, item.title || ''),
              item.subtitle ? el('p', {}, item.subtitle) : null,
              buttons.length ? el('div', { class: 'card-buttons' }, buttons) : null,
            );
          }),
        ),
      );
    }
  }
  return nodes;
}

/** A speech bubble drawn in SVG (an emoji would depend on the visitor's fonts). */
export function chatIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const icon = document.createElementNS(ns, 'svg');
  icon.setAttribute('viewBox', '0 0 24 24');
  icon.setAttribute('aria-hidden', 'true');
  icon.setAttribute('class', 'launcher-icon');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', 'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z');
  icon.append(path);
  return icon;
}
