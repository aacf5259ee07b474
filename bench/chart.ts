/**
 * Charts of the benchmarks as SVG, written by hand (no dependency): grouped bars (`barChart`, the
 * scaling benchmark) and lines over time (`lineChart`, the soak's memory).
 */

const colors = ["#4c78a8", "#f58518", "#54a24b", "#e45756"]

const escape = (text: string): string => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

/** a round step for an axis up to `max`: 1, 2 or 5 times a power of ten, about 5 steps */
const step = (max: number): number => {
  const rough = max / 5
  const power = 10 ** Math.floor(Math.log10(rough || 1))
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? power * 10
}

const format = (value: number): string =>
  value >= 10_000 ? `${Math.round(value / 1000)}k` : value >= 1000 ? `${(value / 1000).toFixed(1)}k` : String(Math.round(value * 10) / 10)

export interface Panel {
  readonly title: string
  readonly groups: ReadonlyArray<string>
  readonly series: ReadonlyArray<{ readonly name: string; readonly values: ReadonlyArray<number> }>
}

const panelHeight = 260

const barPanel = (panel: Panel, top: number, width: number): string => {
  const left = 60
  const plotWidth = width - left - 20
  const plotHeight = panelHeight - 90
  const max = Math.max(1, ...panel.series.flatMap((s) => s.values))
  const tick = step(max)
  const axisMax = Math.ceil(max / tick) * tick
  const y = (v: number) => top + 30 + plotHeight - (v / axisMax) * plotHeight
  const groupWidth = plotWidth / panel.groups.length
  const barWidth = (groupWidth * 0.8) / panel.series.length
  const out: Array<string> = [`<text x="${left}" y="${top + 16}" font-size="13" font-weight="bold">${escape(panel.title)}</text>`]
  for (let v = 0; v <= axisMax; v += tick) {
    out.push(`<line x1="${left}" x2="${left + plotWidth}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`)
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" font-size="10" text-anchor="end">${format(v)}</text>`)
  }
  panel.groups.forEach((group, g) => {
    const x0 = left + g * groupWidth + groupWidth * 0.1
    panel.series.forEach((series, s) => {
      const value = series.values[g] ?? 0
      const x = x0 + s * barWidth
      out.push(`<rect x="${x.toFixed(1)}" y="${y(value).toFixed(1)}" width="${(barWidth - 1).toFixed(1)}" height="${(y(0) - y(value)).toFixed(1)}" fill="${colors[s % colors.length]}"><title>${escape(`${series.name}, ${group}: ${value}`)}</title></rect>`)
      out.push(`<text x="${(x + barWidth / 2).toFixed(1)}" y="${(y(value) - 2).toFixed(1)}" font-size="8" text-anchor="middle">${format(value)}</text>`)
    })
    out.push(`<text x="${(x0 + groupWidth * 0.4).toFixed(1)}" y="${y(0) + 14}" font-size="10" text-anchor="middle">${escape(group)}</text>`)
  })
  panel.series.forEach((series, s) => {
    const x = left + s * 140
    out.push(`<rect x="${x}" y="${top + panelHeight - 36}" width="10" height="10" fill="${colors[s % colors.length]}"/>`)
    out.push(`<text x="${x + 14}" y="${top + panelHeight - 27}" font-size="11">${escape(series.name)}</text>`)
  })
  return out.join("\n")
}

const svgOf = (width: number, height: number, title: string, body: string): string =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="22" font-size="15" text-anchor="middle" font-weight="bold">${escape(title)}</text>
${body}
</svg>
`

/** grouped bars, one panel under another */
export const barChart = (chart: { readonly title: string; readonly panels: ReadonlyArray<Panel> }): string => {
  const width = 980
  const body = chart.panels.map((panel, i) => barPanel(panel, 36 + i * panelHeight, width)).join("\n")
  return svgOf(width, 36 + chart.panels.length * panelHeight, chart.title, body)
}

/** lines over x (seconds, say): one per series, an axis each way */
export const lineChart = (chart: {
  readonly title: string
  readonly xLabel: string
  readonly yLabel: string
  readonly series: ReadonlyArray<{ readonly name: string; readonly points: ReadonlyArray<readonly [number, number]> }>
}): string => {
  const width = 900
  const height = 420
  const left = 70
  const top = 40
  const plotWidth = width - left - 30
  const plotHeight = height - top - 80
  const xs = chart.series.flatMap((s) => s.points.map(([x]) => x))
  const ys = chart.series.flatMap((s) => s.points.map(([, y]) => y))
  const xMax = Math.max(1, ...xs)
  const yTick = step(Math.max(1, ...ys))
  const yMax = Math.ceil(Math.max(1, ...ys) / yTick) * yTick
  const xTick = step(xMax)
  const x = (v: number) => left + (v / xMax) * plotWidth
  const y = (v: number) => top + plotHeight - (v / yMax) * plotHeight
  const out: Array<string> = []
  for (let v = 0; v <= yMax; v += yTick) {
    out.push(`<line x1="${left}" x2="${left + plotWidth}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`)
    out.push(`<text x="${left - 6}" y="${y(v) + 4}" font-size="10" text-anchor="end">${format(v)}</text>`)
  }
  for (let v = 0; v <= xMax; v += xTick) {
    out.push(`<text x="${x(v)}" y="${top + plotHeight + 16}" font-size="10" text-anchor="middle">${format(v)}</text>`)
  }
  out.push(`<text x="${left + plotWidth / 2}" y="${top + plotHeight + 34}" font-size="11" text-anchor="middle">${escape(chart.xLabel)}</text>`)
  out.push(`<text x="16" y="${top + plotHeight / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 16 ${top + plotHeight / 2})">${escape(chart.yLabel)}</text>`)
  chart.series.forEach((series, s) => {
    const path = series.points.map(([px, py], i) => `${i === 0 ? "M" : "L"}${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" ")
    out.push(`<path d="${path}" fill="none" stroke="${colors[s % colors.length]}" stroke-width="2"/>`)
    const lx = left + s * 160
    out.push(`<rect x="${lx}" y="${height - 24}" width="10" height="10" fill="${colors[s % colors.length]}"/>`)
    out.push(`<text x="${lx + 14}" y="${height - 15}" font-size="11">${escape(series.name)}</text>`)
  })
  return svgOf(width, height, chart.title, out.join("\n"))
}
