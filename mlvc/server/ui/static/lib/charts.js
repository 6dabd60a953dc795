// Metric line charts on uPlot (vendor/uPlot.esm.js) over GET /api/v1/series: one chart per
// metric key, one line per run. The server samples each series to a few thousand points;
// a drag-zoom asks it for the window again, which comes back at full resolution once it
// holds few enough points. NaN and +/-inf are gaps in the line and marked under/over it.
import uPlot from '../vendor/uPlot.esm.js';

/** A distinct colour per run (golden-angle hues: 20+ runs stay apart). */
export function colour(i) {
  return `hsl(${Math.round((i * 137.508) % 360)}, 65%, ${i % 2 ? 38 : 48}%)`;
}

/** The points to draw at most, per series: fewer when many runs share a chart. */
export function limitFor(runs) {
  return Math.max(500, Math.min(2500, Math.floor(20000 / Math.max(1, runs))));
}

/** GET /api/v1/series for `runs` x `keys` (one key, a list, or none: only the runs' key
 * names); the URL is built here (run and key repeat). */
export async function fetchSeries(api, runs, keys, x, limit, win, signal) {
  const q = new URLSearchParams();
  for (const r of runs) q.append('run', r);
  for (const k of Array.isArray(keys) ? keys : keys ? [keys] : []) q.append('key', k);
  q.set('x', x);
  q.set('limit', String(limit));
  if (win) { q.set('x_min', String(win[0])); q.set('x_max', String(win[1])); }
  return api(`/api/v1/series?${q}`, { signal });
}

/** Debiased exponential moving average (TensorBoard's), skipping gaps; weight in [0, 1). */
export function ema(values, weight) {
  if (!weight) return values;
  const out = new Array(values.length);
  let last = 0;
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined) { out[i] = v; continue; }
    last = last * weight + (1 - weight) * v;
    n += 1;
    out[i] = last / (1 - weight ** n);
  }
  return out;
}

/** The x column of one series for the chosen axis (relative: seconds from its run's
 * first point, the origin the server windows by). */
function xs(series, x) {
  if (x === 'step') return series.step;
  if (x === 'time') return series.time;
  return series.time.map((t) => t - series.origin);
}

/**
 * Aligned uPlot data for one key: [x, run1, run2, ...] plus the non-finite points.
 * `answer` is a /api/v1/series body; `runs` the run ids in legend order.
 */
export function toData(answer, runs, x, smooth, log) {
  const byRun = new Map(answer.series.map((s) => [s.run, s]));
  const tables = [];
  const marks = [];
  runs.forEach((run, i) => {
    const s = byRun.get(run);
    if (!s) { tables.push([[], []]); return; }
    const xcol = xs(s, x);
    const ycol = s.value.map((v, j) => {
      if (typeof v === 'string') { marks.push({ run: i, x: xcol[j], kind: v }); return null; }
      if (log && !(v > 0)) return null;
      return v;
    });
    tables.push([xcol, ema(ycol, smooth)]);
  });
  const data = tables.length ? uPlot.join(tables) : [[]];
  // how many points each run draws: a run of one point is drawn as a dot (no line to draw)
  const counts = tables.map(([, y]) => y.reduce((n, v) => n + (v === null || v === undefined ? 0 : 1), 0));
  return { data, marks, counts, sampled: answer.series.some((s) => s.sampled) };
}

/** Decimals that write `incr` (a tick spacing) exactly, at most 12. */
function decimalsOf(incr) {
  let d = 0;
  while (d < 12 && Math.abs(Math.round(incr * 10 ** d) - incr * 10 ** d) > 1e-9 * 10 ** d) d += 1;
  return d;
}

/** Tick labels of a numeric axis, with the decimals its tick spacing needs (uPlot's own keep
 * at most 3: ticks 0.0002 s apart would all read "0"). */
export function tickLabels(splits, incr) {
  const d = incr > 0 && Number.isFinite(incr) ? decimalsOf(incr) : 3;
  return splits.map((v) => (v === null || v === undefined ? '' : String(+v.toFixed(d))));
}

/** Draws a small triangle per NaN (middle), +inf (top) and -inf (bottom) point. */
function markersPlugin(state) {
  return {
    hooks: {
      draw: [(u) => {
        const { ctx } = u;
        const { left, top, width, height } = u.bbox;
        const r = 4 * devicePixelRatio;
        ctx.save();
        for (const m of state.marks) {
          if (!u.series[m.run + 1].show) continue;
          const px = u.valToPos(m.x, 'x', true);
          if (px < left || px > left + width) continue;
          const py = m.kind === 'inf' ? top + r : m.kind === '-inf' ? top + height - r : top + height / 2;
          ctx.fillStyle = u.series[m.run + 1].stroke();
          ctx.beginPath();
          if (m.kind === '-inf') { ctx.moveTo(px - r, py - r); ctx.lineTo(px + r, py - r); ctx.lineTo(px, py + r); }
          else { ctx.moveTo(px - r, py + r); ctx.lineTo(px + r, py + r); ctx.lineTo(px, py - r); }
          ctx.closePath();
          ctx.fill();
        }
        ctx.restore();
      }],
    },
  };
}

/**
 * One chart in `box` for `key` over `runs` ({id, label}); returns {destroy, reset, zoom}.
 * opts: {api, x, smooth, log, width, cache (a Map), onDrawn(), onError(e)}.
 */
export async function metricChart(box, key, runs, opts) {
  const ids = runs.map((r) => r.id);
  const limit = limitFor(ids.length);
  // the whole series per (key, x): smoothing and log scale redraw without asking again
  const cached = `${key}\u0000${opts.x}`;
  let full = opts.cache && opts.cache.get(cached);
  if (!full) {
    full = await fetchSeries(opts.api, ids, key, opts.x, limit, null);
    if (opts.cache) opts.cache.set(cached, full);
  }
  const state = { marks: [], window: null, controller: null, full };
  const first = toData(full, ids, opts.x, opts.smooth, opts.log);
  state.marks = first.marks;
  state.counts = first.counts;
  let drawn = false;

  async function load(win) {
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    box.dataset.loading = 'true';
    try {
      const answer = win ? await fetchSeries(opts.api, ids, key, opts.x, limit, win, controller.signal) : state.full;
      if (controller.signal.aborted) return;
      const next = toData(answer, ids, opts.x, opts.smooth, opts.log);
      state.marks = next.marks;
      state.counts = next.counts;
      state.window = win;
      box.dataset.sampled = String(next.sampled);
      box.dataset.window = win ? `${win[0]},${win[1]}` : '';
      u.setData(next.data, !win);
      if (win) u.setScale('x', { min: win[0], max: win[1] });
    } catch (e) {
      if (e.name !== 'AbortError') throw e;
    } finally {
      if (state.controller === controller) { state.controller = null; delete box.dataset.loading; }
    }
  }

  const reset = () => load(null);
  const series = [{ label: opts.x === 'step' ? 'step' : opts.x === 'time' ? 'time' : 'seconds' }];
  runs.forEach((r, i) => series.push({
    label: r.label, stroke: colour(i), width: 1.25, spanGaps: false,
    points: { show: () => state.counts[i] === 1, size: 7, fill: colour(i) },
  }));
  // numeric axes label their ticks with the decimals the spacing needs; the x ticks are
  // kept on the box too (uPlot draws them on a canvas), for people's tools and the tests
  const numeric = (axis) => (self, splits, _i, _space, incr) => {
    const labels = tickLabels(splits, incr);
    if (axis === 'x') box.dataset.xTicks = labels.join(' ');
    return labels;
  };
  const u = new uPlot({
    width: opts.width,
    height: 260,
    title: key,
    series,
    scales: {
      x: { time: opts.x === 'time' },
      y: opts.log ? { distr: 3, log: 10 } : {},
    },
    axes: [
      opts.x === 'time' ? {} : { values: numeric('x') },
      opts.log ? { size: 64 } : { size: 64, values: numeric('y') },
    ],
    legend: { live: true },
    focus: { alpha: 0.3 },  // the run under the cursor stands out among many
    cursor: {
      focus: { prox: 16 },
      drag: { x: true, y: false, setScale: true },
      bind: { dblclick: () => (e) => { if (e.button === 0) reset(); return null; } },
    },
    plugins: [markersPlugin(state)],
    hooks: {
      setSelect: [(self) => {
        const sel = self.select;
        if (sel.width < 2) return;
        const lo = self.posToVal(sel.left, 'x');
        const hi = self.posToVal(sel.left + sel.width, 'x');
        load([lo, hi]).catch((e) => opts.onError && opts.onError(e));
      }],
      draw: [() => {
        if (drawn) return;
        drawn = true;
        box.dataset.drawn = 'true';
        if (opts.onDrawn) opts.onDrawn();
      }],
    },
  }, first.data, box);
  box.dataset.sampled = String(first.sampled);
  box.dataset.key = key;
  return {
    reset,
    zoom: (lo, hi) => load([lo, hi]),
    destroy: () => { if (state.controller) state.controller.abort(); u.destroy(); },
    plot: u,
  };
}
