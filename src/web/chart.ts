/**
 * The client IO chart, drawn on the server as inline SVG: reads and writes over the last hour, one
 * line each, on a shared y axis that starts at 0 and ends at a round number above the highest
 * point. No script draws it, so it shows without JavaScript, and a live update just swaps it.
 *
 * The arithmetic: the plot is `chartWidth` x `chartHeight` user units; a sample at time t lands at
 * x = (t - (now - window)) / window * width, a value v at y = height - v / top * height (the
 * plot's own width and height, inside the margins). Example: a 60 min window, now = 12:00, a
 * sample at 11:30 with 150 IOPS on a 200 top: x = width / 2, y = height / 4 from the plot's top.
 *
 * Pure: samples in, Html out. Colours come from CSS classes (the page's stylesheet), never from
 * style attributes, which the Content-Security-Policy would refuse.
 */
import { html, join, type Html } from './html.js';

/** One interval's average rates, as the API's /stats/io gives them. */
export interface IoPoint {
  /** End of the interval, ms since the epoch. */
  readonly atMs: number;
  readonly read: number;
  readonly write: number;
}

export interface ChartOptions {
  readonly nowMs: number;
  readonly windowMs: number;
  /** Formats an axis value: count() for IOPS, bytesPerSecond() for throughput. */
  readonly label: (value: number) => string;
  /** Bytes: round the axis top in binary units (2 MiB/s, not 1.9 MiB/s). */
  readonly binary?: boolean;
  /** Names the chart for screen readers and tests. */
  readonly title: string;
  readonly id: string;
}

const chartWidth = 600;
const chartHeight = 140;
/** Left margin for the y labels, bottom margin for the x labels. */
const marginLeft = 70;
const marginBottom = 18;
/** Room above the top grid line for its label. */
const marginTop = 8;

/**
 * The smallest "round" number (1, 2 or 5 times a power of ten) at or above `value`, so the axis
 * reads 0..50 rather than 0..43.7. 0 gives 1 (an empty chart still has an axis).
 * Examples: 43.7 -> 50, 120 -> 200, 1 -> 1, 0 -> 1.
 */
export function roundTop(value: number): number {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

/**
 * roundTop() in the binary unit of the value, so a bytes axis ends on a round label: 1.9e6 B/s is
 * 1.81 MiB/s -> 2 MiB/s = 2097152. Below 1 KiB the top is 1 KiB (halves of a byte mean nothing).
 */
export function roundTopBinary(value: number): number {
  if (!(value >= 1024)) return 1024;
  const unit = 1024 ** Math.floor(Math.log(value) / Math.log(1024));
  return roundTop(value / unit) * unit;
}

function polyline(points: readonly IoPoint[], pick: (p: IoPoint) => number, o: ChartOptions, top: number): string {
  const start = o.nowMs - o.windowMs;
  return points
    .filter((p) => p.atMs >= start && p.atMs <= o.nowMs)
    .map((p) => {
      const x = marginLeft + ((p.atMs - start) / o.windowMs) * (chartWidth - marginLeft);
      const y = chartHeight - marginBottom - (Math.max(0, pick(p)) / top) * (chartHeight - marginBottom - marginTop);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}

/** The chart as an <svg> element, with a legend of the latest values under it. */
export function ioChart(points: readonly IoPoint[], o: ChartOptions): Html {
  const sorted = [...points].sort((a, b) => a.atMs - b.atMs);
  const highest = Math.max(0, ...sorted.map((p) => Math.max(p.read, p.write)));
  const top = o.binary === true ? roundTopBinary(highest) : roundTop(highest);
  const plotBottom = chartHeight - marginBottom;
  const gridLines = [0, 0.5, 1].map((f) => {
    const y = (plotBottom - f * (plotBottom - marginTop)).toFixed(1);
    return html`<line class="grid" x1="${marginLeft}" y1="${y}" x2="${chartWidth}" y2="${y}"></line>
      <text class="axis" x="${marginLeft - 6}" y="${y}" text-anchor="end" dominant-baseline="middle"
        >${o.label(f * top)}</text
      >`;
  });
  const minutes = Math.round(o.windowMs / 60_000);
  const xLabels = [
    [marginLeft, `-${minutes} min`, 'start'],
    [(marginLeft + chartWidth) / 2, `-${Math.round(minutes / 2)} min`, 'middle'],
    [chartWidth, 'now', 'end'],
  ] as const;
  return html`<svg
    class="chart"
    id="${o.id}"
    viewBox="0 0 ${chartWidth} ${chartHeight}"
    role="img"
    aria-label="${o.title}"
    data-top="${top}"
    data-points="${sorted.length}"
  >
    <title>${o.title}</title>
    ${gridLines}
    ${join(xLabels.map(([x, text, anchor]) => html`<text class="axis" x="${x}" y="${chartHeight - 4}" text-anchor="${anchor}">${text}</text>`))}
    <polyline class="line read" points="${polyline(sorted, (p) => p.read, o, top)}"></polyline>
    <polyline class="line write" points="${polyline(sorted, (p) => p.write, o, top)}"></polyline>
  </svg>`;
}
