// A horizontal bar chart of the ratios (ours / peer) as a standalone SVG, written by hand so the
// benchmark needs no plotting package. A dashed line marks 1.0; a tick marks each goal.
const BAR_HEIGHT = 18;
const GAP = 6;
const LABEL_WIDTH = 330;
const PLOT_WIDTH = 420;
const MARGIN = 16;

export interface Bar {
  label: string;
  value: number;
  goal?: number;
}

export function ratioChart(title: string, bars: Bar[]): string {
  const max = Math.max(1.25, ...bars.map((b) => b.value), ...bars.map((b) => b.goal ?? 0)) * 1.05;
  const x = (v: number) => LABEL_WIDTH + (v / max) * PLOT_WIDTH;
  const top = MARGIN + 28;
  const height = top + bars.length * (BAR_HEIGHT + GAP) + MARGIN + 18;
  const width = LABEL_WIDTH + PLOT_WIDTH + 70;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${MARGIN}" y="${MARGIN + 10}" font-size="14" font-weight="bold">${escape(title)}</text>`,
  ];
  bars.forEach((b, i) => {
    const y = top + i * (BAR_HEIGHT + GAP);
    const met = b.goal === undefined || b.value >= b.goal;
    const fill = b.goal === undefined ? "#7a9cc6" : met ? "#4c9a5b" : "#c8553d";
    out.push(`<text x="${LABEL_WIDTH - 8}" y="${y + BAR_HEIGHT - 5}" text-anchor="end">${escape(b.label)}</text>`);
    out.push(`<rect x="${LABEL_WIDTH}" y="${y}" width="${Math.max(1, x(b.value) - LABEL_WIDTH).toFixed(1)}" height="${BAR_HEIGHT}" fill="${fill}"/>`);
    out.push(`<text x="${(x(b.value) + 4).toFixed(1)}" y="${y + BAR_HEIGHT - 5}">${b.value.toFixed(2)}×</text>`);
    if (b.goal !== undefined) {
      out.push(`<line x1="${x(b.goal).toFixed(1)}" x2="${x(b.goal).toFixed(1)}" y1="${y - 2}" y2="${y + BAR_HEIGHT + 2}" stroke="#000" stroke-width="2"/>`);
    }
  });
  const bottom = top + bars.length * (BAR_HEIGHT + GAP);
  out.push(`<line x1="${x(1).toFixed(1)}" x2="${x(1).toFixed(1)}" y1="${top - 6}" y2="${bottom}" stroke="#555" stroke-dasharray="4 3"/>`);
  out.push(`<text x="${x(1).toFixed(1)}" y="${bottom + 14}" text-anchor="middle">1.0</text>`);
  out.push(`<text x="${LABEL_WIDTH}" y="${bottom + 14}">0</text>`);
  out.push(`<text x="${width - 8}" y="${bottom + 14}" text-anchor="end">black tick = goal; green met, red not met</text>`);
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

function escape(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}
