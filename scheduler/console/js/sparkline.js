// A sparkline: the last minute of a rate as a small SVG line, drawn to the largest value it shows. Updated
// in place (one path's `d`), so a table of queues redraws every second without rebuilding rows.
import { svg } from './dom.js';

const W = 120;
const H = 26;

/** A new, empty sparkline. */
export function sparkline(kind) {
  const el = svg('svg', { class: `spark spark-${kind}`, viewBox: `0 0 ${W} ${H}`, width: W, height: H,
    role: 'img', 'aria-label': `${kind} per second, last minute` });
  el.append(svg('path', { class: 'area', d: '' }), svg('path', { class: 'line', d: '' }));
  return el;
}

/** Draws `values` (oldest first, one a second; at most `slots`) into a sparkline. */
export function draw(el, values, slots = 60) {
  const [area, line] = el.children;
  if (!values.length) {
    line.setAttribute('d', '');
    area.setAttribute('d', '');
    return;
  }
  const max = Math.max(...values, 1e-9);
  const step = W / Math.max(slots - 1, 1);
  const x0 = W - (values.length - 1) * step;
  const pts = values.map((v, i) => [x0 + i * step, H - 2 - (v / max) * (H - 4)]);
  const d = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)}`).join('');
  line.setAttribute('d', d);
  area.setAttribute('d', `${d}L${W} ${H}L${x0.toFixed(1)} ${H}Z`);
}
