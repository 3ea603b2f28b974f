/** A small dependency-free SVG line plot: axes, ticks, labels, a legend; optional log2 x axis. */

export interface Series {
  name: string;
  points: Array<[x: number, y: number]>;
  /** Draw the line dashed (e.g. a peer). */
  dashed?: boolean;
  /** Line colour (CSS); default: the palette by the series' position. */
  color?: string;
}

export interface PlotSpec {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Place x on a log2 scale, with ticks at the data's x values. */
  xLog2?: boolean;
  width?: number;
  height?: number;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const MARGIN = { left: 72, top: 56, bottom: 56 };

const escapeXml = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
const fmt = (n: number) => (Math.round(n * 10) / 10).toString();

/** About `count` round tick values (1, 2, 5 × 10^k steps) from 0 to at least `max`. */
function niceTicks(max: number, count = 5): number[] {
  const raw = Math.max(max, 1e-9) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step; v += step) ticks.push(v);
  return ticks;
}

export function linePlot(spec: PlotSpec): string {
  // The legend sits right of the plot, so it never hides a line.
  const legendW = 40 + Math.max(0, ...spec.series.map((s) => s.name.length)) * 7;
  const width = spec.width ?? 640 + legendW;
  const height = spec.height ?? 440;
  const plotW = width - MARGIN.left - legendW - 24;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const points = spec.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = [...new Set(points.map(([x]) => x))].sort((a, b) => a - b);
  const tx = (x: number) => (spec.xLog2 ? Math.log2(x) : x);
  const xMin = xs.length ? tx(xs[0]!) : 0;
  const xMax = xs.length ? tx(xs[xs.length - 1]!) : 1;
  const yTicks = niceTicks(Math.max(0, ...points.map(([, y]) => y)));
  const yMax = yTicks[yTicks.length - 1]!;
  const pad = plotW * 0.04;
  const px = (x: number) => MARGIN.left + pad + (xMax === xMin ? plotW / 2 - pad : ((tx(x) - xMin) / (xMax - xMin)) * (plotW - 2 * pad));
  const py = (y: number) => MARGIN.top + plotH - (y / yMax) * plotH;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ` +
      `${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(spec.title)}</text>`,
  ];
  if (spec.subtitle) out.push(`<text x="${width / 2}" y="40" text-anchor="middle" fill="#555">${escapeXml(spec.subtitle)}</text>`);
  // Grid and y ticks.
  for (const v of yTicks) {
    const y = fmt(py(v));
    out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${MARGIN.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${fmt(v)}</text>`);
  }
  // x ticks at the data's x values.
  for (const x of xs) {
    const X = fmt(px(x));
    out.push(`<line x1="${X}" x2="${X}" y1="${MARGIN.top + plotH}" y2="${MARGIN.top + plotH + 5}" stroke="black"/>`);
    out.push(`<text x="${X}" y="${MARGIN.top + plotH + 18}" text-anchor="middle">${fmt(x)}</text>`);
  }
  // Axes and labels.
  out.push(`<path d="M${MARGIN.left} ${MARGIN.top}V${MARGIN.top + plotH}H${MARGIN.left + plotW}" fill="none" stroke="black"/>`);
  out.push(`<text x="${MARGIN.left + plotW / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  out.push(`<text transform="translate(18 ${MARGIN.top + plotH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`);
  // Lines, markers and the legend.
  spec.series.forEach((s, i) => {
    const color = s.color ?? COLORS[i % COLORS.length]!;
    const valid = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)).sort((a, b) => a[0] - b[0]);
    const d = valid.map(([x, y], j) => `${j ? "L" : "M"}${fmt(px(x))} ${fmt(py(y))}`).join("");
    if (d) out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`);
    for (const [x, y] of valid) out.push(`<circle cx="${fmt(px(x))}" cy="${fmt(py(y))}" r="3.5" fill="${color}"/>`);
    const ly = MARGIN.top + 12 + i * 18;
    const lx = MARGIN.left + plotW + 16;
    out.push(
      `<line x1="${lx}" x2="${lx + 24}" y1="${ly}" y2="${ly}" stroke="${color}" ` +
        `stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
    );
    out.push(`<text x="${lx + 30}" y="${ly}" dominant-baseline="middle">${escapeXml(s.name)}</text>`);
  });
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}
