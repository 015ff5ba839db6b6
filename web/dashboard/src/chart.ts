// A live time-series chart (uPlot) over the points of a vizv1.Series.
//
// For tests, the chart's element carries data-points (the number of points
// of the last draw) and data-updates (how many times new data was drawn),
// so a test sees the chart move without reading pixels.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import type { Point } from './api';
import { h } from './dom';

export interface Line {
  label: string;
  color: string;
  value: (p: Point) => number | null;
}

export interface ChartOptions {
  testId: string;
  title: string;
  lines: Line[];
  /** format writes a value in the header; tick one on the y axis. */
  format: (v: number) => string;
  tick: (v: number) => string;
  /** range fixes the y range from the data's min and max; default from 0 up. */
  range?: (min: number, max: number) => [number, number];
}

export interface Chart {
  el: HTMLElement;
  update(points: Point[]): void;
  destroy(): void;
}

const HEIGHT = 210;

/** tickTime writes a time axis tick: hh:mm, with seconds when ticks are less than a minute apart. */
function tickTime(sec: number, incr: number): string {
  const d = new Date(sec * 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return incr < 60 ? `${hm}:${pad(d.getSeconds())}` : hm;
}

export function timeChart(opts: ChartOptions): Chart {
  const now = h('span', { class: 'chart-now' });
  const plot = h('div', { class: 'chart-plot' });
  const el = h(
    'section',
    { class: 'card chart', 'data-testid': opts.testId, 'data-points': 0, 'data-updates': 0 },
    h('header', {}, h('h3', {}, opts.title), now),
    plot,
  );
  let chart: uPlot | undefined;
  let updates = 0;
  let drawnPoints = 0;
  let pending = false;
  const resize = new ResizeObserver(() => {
    if (chart && plot.clientWidth > 0) chart.setSize({ width: plot.clientWidth, height: HEIGHT });
  });
  resize.observe(plot);

  let points: Point[] = [];

  /** showValues writes the values at index i (the cursor's, or the newest) into the header. */
  function showValues(i: number | null): void {
    const p = i !== null && i >= 0 && i < points.length ? points[i] : undefined;
    const hovering = i !== null && i !== points.length - 1;
    now.replaceChildren(
      hovering && p ? h('span', { class: 'now-at' }, tickTime(Date.parse(p.time) / 1000, 1)) : '',
      ...opts.lines.map((l) => {
        const v = p ? l.value(p) : null;
        return h(
          'span',
          { class: 'now-item' },
          h('i', { style: `background:${l.color}` }),
          opts.lines.length > 1 ? `${l.label} ` : '',
          h('b', {}, v === null ? '–' : opts.format(v)),
        );
      }),
    );
  }

  function create(data: uPlot.AlignedData): uPlot {
    const axis = {
      stroke: '#64748b',
      grid: { stroke: '#eef2f7', width: 1 },
      ticks: { stroke: '#e2e8f0', width: 1 },
      font: '11px system-ui, sans-serif',
    };
    const o: uPlot.Options = {
      width: Math.max(plot.clientWidth, 200),
      height: HEIGHT,
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      // The header shows the values (newest, or under the cursor) instead of a legend.
      legend: { show: false },
      scales: {
        x: { time: true },
        y: {
          range: (_u, min, max) => {
            if (opts.range) return opts.range(min ?? 0, max ?? 0);
            const top = max > 0 ? max * 1.15 : 1;
            return [0, top];
          },
        },
      },
      axes: [
        {
          ...axis,
          values: (_u, splits, _ax, _space, incr) => splits.map((v) => tickTime(v, incr)),
        },
        { ...axis, size: 62, values: (_u, splits) => splits.map((v) => opts.tick(v)) },
      ],
      series: [
        {},
        ...opts.lines.map((l) => ({
          label: l.label,
          stroke: l.color,
          width: 2,
          fill: opts.lines.length === 1 ? `${l.color}1a` : undefined,
          points: { show: false },
          spanGaps: false,
        })),
      ],
      hooks: {
        draw: [
          () => {
            if (!pending) return;
            pending = false;
            updates++;
            el.dataset.points = String(drawnPoints);
            el.dataset.updates = String(updates);
          },
        ],
        setCursor: [(u) => showValues(u.cursor.idx ?? points.length - 1)],
      },
    };
    return new uPlot(o, data, plot);
  }

  function update(next: Point[]): void {
    points = next;
    const xs = points.map((p) => Date.parse(p.time) / 1000);
    const ys = opts.lines.map((l) => points.map((p) => l.value(p)));
    const data = [xs, ...ys] as uPlot.AlignedData;
    drawnPoints = xs.length;
    pending = true;
    if (!chart) chart = create(data);
    else chart.setData(data);
    showValues(chart.cursor.idx ?? points.length - 1);
  }

  function destroy(): void {
    resize.disconnect();
    chart?.destroy();
    chart = undefined;
  }

  return { el, update, destroy };
}
