// A small SVG line chart for the operations dashboard: time on x, one line
// per series, y from 0 (or the given bounds), gridlines with labelled ticks,
// and a legend. Colours come from the stylesheet (classes s0…s5), never
// from inline styles, so the page's Content-Security-Policy holds.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A "nice" upper bound for the y axis (1, 2 or 5 times a power of ten). */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

/**
 * Draws into `container` (replacing what it held).
 *
 * `series`: `[{name, points: [[epochMs, value], …]}]`; a null value is a
 * gap. `format(v)` labels the y ticks and the legend's latest values;
 * `yMax` fixes the top (hit rates use 1), else it fits the data.
 */
export function lineChart(container, { title, series, format = (v) => String(Math.round(v)), yMax, width = 400, height = 200 }) {
  const pad = { left: 52, right: 10, top: 10, bottom: 24 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const points = series.flatMap((s) => s.points.filter(([, v]) => v !== null && Number.isFinite(v)));
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img' });
  const latest = series.map((s) => {
    const last = [...s.points].reverse().find(([, v]) => v !== null && Number.isFinite(v));
    return `${s.name} ${last ? format(last[1]) : '–'}`;
  });
  root.setAttribute('aria-label', `${title}: ${latest.join(', ')}`);
  root.append(svg('title', {}, title));

  if (!points.length) {
    root.append(svg('text', { x: width / 2, y: height / 2, 'text-anchor': 'middle', class: 'empty' }, 'Waiting for data…'));
    container.replaceChildren(root, legend(series, latest));
    return;
  }
  const t0 = Math.min(...points.map(([t]) => t));
  const t1 = Math.max(...points.map(([t]) => t));
  const top = yMax ?? niceMax(Math.max(...points.map(([, v]) => v)));
  const x = (t) => pad.left + (t1 === t0 ? plotW : ((t - t0) / (t1 - t0)) * plotW);
  const y = (v) => pad.top + plotH - (Math.min(v, top) / top) * plotH;

  for (let i = 0; i <= 4; i += 1) {
    const value = (top * i) / 4;
    const yy = y(value);
    root.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: yy, y2: yy, class: i === 0 ? 'axis' : 'grid' }));
    root.append(svg('text', { x: pad.left - 6, y: yy + 3, 'text-anchor': 'end', class: 'tick' }, format(value)));
  }
  const clock = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  root.append(svg('text', { x: pad.left, y: height - 6, class: 'tick' }, clock(t0)));
  root.append(svg('text', { x: width - pad.right, y: height - 6, 'text-anchor': 'end', class: 'tick' }, clock(t1)));

  series.forEach((s, index) => {
    // A gap (null) starts a new segment.
    let segment = [];
    const flush = () => {
      if (segment.length === 1) {
        const [px, py] = segment[0];
        root.append(svg('circle', { cx: px, cy: py, r: 2.5, class: `s${index % 6}` }));
      } else if (segment.length > 1) {
        root.append(svg('polyline', { points: segment.map((p) => p.join(',')).join(' '), class: `line s${index % 6}` }));
      }
      segment = [];
    };
    for (const [t, v] of s.points) {
      if (v === null || !Number.isFinite(v)) flush();
      else segment.push([x(t).toFixed(1), y(v).toFixed(1)]);
    }
    flush();
  });
  container.replaceChildren(root, legend(series, latest));
}

function legend(series, latest) {
  const list = document.createElement('ul');
  list.className = 'legend';
  series.forEach((s, index) => {
    const item = document.createElement('li');
    const swatch = svg('svg', { viewBox: '0 0 14 4', 'aria-hidden': 'true' });
    swatch.append(svg('rect', { width: 14, height: 4, class: `s${index % 6}` }));
    item.append(swatch, latest[index]);
    list.append(item);
  });
  return list;
}
