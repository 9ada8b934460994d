// The chart of the queue size over time: an inline SVG drawn from
// GET /queue/history and the live samples of the queue stream.

import {h, replace, fmtClock} from "../util.js";

const HEIGHT = 180;
const PAD = {left: 40, right: 12, top: 12, bottom: 26};

/** A "nice" upper bound of the y axis for `max`. */
function niceMax(max) {
  if (max <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= max) return step * power;
  }
  return 10 * power;
}

/**
 * A chart of the last `span` seconds: call add(at, size) with samples
 * (epoch seconds, jobs in the queue); it redraws itself.
 */
export class QueueChart {
  constructor(span = 3600) {
    this.span = span;
    this.points = [];
    this.svg = h("svg", {viewBox: `0 0 640 ${HEIGHT}`, role: "img",
      class: "chart", "aria-labelledby": "chart-title chart-desc",
      focusable: "false"});
    this.element = h("figure", {class: "card chart-card"},
      h("figcaption", {id: "chart-title"},
        "Jobs in the queue, last hour"),
      this.svg, h("p", {id: "chart-desc", class: "chart-desc"}));
  }

  /** Replace the samples by the buckets of GET /queue/history. */
  history(buckets) {
    const points = buckets.map((bucket) => ({
      at: Date.parse(bucket.at) / 1000, size: bucket.size}))
      .filter((point) => Number.isFinite(point.at));
    const live = this.points.filter((point) => point.live);
    const first = live.length ? live[0].at : Infinity;
    this.points = points.filter((point) => point.at < first).concat(live);
    this.draw();
  }

  /** Add a live sample and redraw. */
  add(at, size) {
    this.points.push({at, size, live: true});
    const oldest = at - this.span;
    while (this.points.length > 2 && this.points[0].at < oldest) {
      this.points.shift();
    }
    this.draw();
  }

  /** Redraw whenever the chart's width changes; returns the cleanup. */
  watch() {
    if (!window.ResizeObserver) return () => {};
    let width = 0;
    const observer = new ResizeObserver(() => {
      const now = Math.round(this.svg.getBoundingClientRect().width);
      if (now && now !== width) {
        width = now;
        this.draw();
      }
    });
    observer.observe(this.svg);
    return () => observer.disconnect();
  }

  draw() {
    // one unit of the drawing is one pixel: text keeps its size
    const WIDTH = Math.max(240, Math.round(
      this.svg.getBoundingClientRect().width) || 640);
    this.svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    const points = this.points;
    const now = points.length ? points[points.length - 1].at
      : Date.now() / 1000;
    const from = now - this.span;
    const max = niceMax(Math.max(0, ...points.map((p) => p.size)));
    const innerW = WIDTH - PAD.left - PAD.right;
    const innerH = HEIGHT - PAD.top - PAD.bottom;
    const x = (at) => PAD.left + ((at - from) / this.span) * innerW;
    const y = (size) => PAD.top + innerH - (size / max) * innerH;
    const parts = [];
    for (const value of [0, max / 2, max]) {
      parts.push(h("line", {class: "grid", x1: PAD.left, x2: WIDTH - PAD.right,
        y1: y(value), y2: y(value)}));
      parts.push(h("text", {class: "axis", x: PAD.left - 6, y: y(value) + 4,
        "text-anchor": "end"}, String(Math.round(value * 10) / 10)));
    }
    for (const [offset, anchor] of [[this.span, "start"],
      [this.span / 2, "middle"], [0, "end"]]) {
      parts.push(h("text", {class: "axis", x: x(now - offset),
        y: HEIGHT - 8, "text-anchor": anchor}, fmtClock(now - offset)
        .slice(0, 5)));
    }
    const visible = points.filter((p) => p.at >= from);
    if (visible.length) {
      const line = visible.map((p, i) => `${i ? "L" : "M"}${x(p.at)
        .toFixed(1)},${y(p.size).toFixed(1)}`).join(" ");
      const last = visible[visible.length - 1];
      const area = `${line} L${x(last.at).toFixed(1)},${y(0)} ` +
        `L${x(visible[0].at).toFixed(1)},${y(0)} Z`;
      parts.push(h("path", {class: "area", d: area}));
      parts.push(h("path", {class: "line", d: line}));
      parts.push(h("circle", {class: "dot", cx: x(last.at), cy: y(last.size),
        r: 3}));
    }
    replace(this.svg, parts);
    const current = visible.length ? visible[visible.length - 1].size : 0;
    const peak = Math.max(0, ...visible.map((p) => p.size));
    this.element.querySelector(".chart-desc").textContent =
      `Now ${current} job${current === 1 ? "" : "s"} in the queue; ` +
      `at most ${peak} in the last hour.`;
  }
}
