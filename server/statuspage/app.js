// The paxosd status page: a snapshot from /api/stream's first frame, then
// live updates. Every value from the server goes into the page through
// textContent or an SVG attribute, never as HTML.
"use strict";

const maxEvents = 200; // list items kept in the page
const svgNS = "http://www.w3.org/2000/svg";
const state = { series: [], seriesSeconds: 300, events: [], lastEventSeq: 0, tail: [], tailMax: 20, lastIndex: -1 };

function $(id) { return document.getElementById(id); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
}

function renderBounds(n) {
  $("bounds").textContent = n.last_index < 0 ? "empty" : "indexes " + n.first_index + " to " + n.last_index;
}

function renderStatus(st) {
  if (st.error) {
    banner(st.error);
    return;
  }
  banner("");
  const n = st.node;
  state.node = n;
  document.title = "paxosd node " + n.id;
  $("title").textContent = "paxosd node " + n.id + (n.address ? " (" + n.address + ")" : "");
  $("master").textContent = n.master ? "node " + n.master + (n.master_address ? " (" + n.master_address + ")" : "") : "none known";
  $("ballot").textContent = n.ballot;
  $("self-role").textContent = n.role;
  $("chosen").textContent = n.chosen_instance;
  $("unapplied").textContent = n.chosen_unapplied;
  renderBounds(n);
  $("self-lag").textContent = n.lag + " instances" + (n.behind ? " (catching up)" : "");
  const body = $("members").tBodies[0];
  body.replaceChildren();
  for (const m of st.members) {
    const tr = el("tr");
    tr.dataset.id = m.id;
    if (m.master) tr.classList.add("master");
    if (m.self) tr.classList.add("self");
    tr.append(el("td", m.id + (m.self ? " (this node)" : "")), el("td", m.address), el("td", m.role));
    tr.append(el("td", m.alive ? "yes" : "no", m.alive ? "" : "dead"));
    tr.append(el("td", m.known ? m.applied : "?"), el("td", m.known ? m.lag : "?"));
    body.append(tr);
  }
  const p = $("pending");
  p.hidden = !st.pending;
  p.textContent = st.pending ? "pending change: " + st.pending + ", in effect from instance " + st.pending_from : "";
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 100) return Math.round(v).toString();
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

// chart draws lines (each {key, cls}) of state.series into svg, the newest
// point at the right edge, state.seriesSeconds wide.
function chart(svg, lines) {
  const W = 600, H = 170, left = 44, bottom = 18, top = 8;
  svg.replaceChildren();
  const pts = state.series;
  let maxV = 0;
  for (const p of pts) for (const l of lines) if (p[l.key] !== null && p[l.key] > maxV) maxV = p[l.key];
  maxV = niceMax(maxV);
  const now = pts.length ? pts[pts.length - 1].t : Date.now();
  const span = state.seriesSeconds * 1000;
  const x = t => left + (W - left - 4) * (1 - (now - t) / span);
  const y = v => top + (H - top - bottom) * (1 - v / maxV);
  for (let i = 0; i <= 4; i++) {
    const v = maxV * i / 4, yy = y(v);
    const g = document.createElementNS(svgNS, "line");
    g.setAttribute("x1", left); g.setAttribute("x2", W); g.setAttribute("y1", yy); g.setAttribute("y2", yy);
    g.setAttribute("class", "grid");
    svg.append(g);
    const t = document.createElementNS(svgNS, "text");
    t.setAttribute("x", 2); t.setAttribute("y", yy + 4); t.setAttribute("class", "axis");
    t.textContent = fmt(v);
    svg.append(t);
  }
  const lbl = document.createElementNS(svgNS, "text");
  lbl.setAttribute("x", left); lbl.setAttribute("y", H - 4); lbl.setAttribute("class", "axis");
  lbl.textContent = "−" + Math.round(state.seriesSeconds / 60) + " min";
  svg.append(lbl);
  for (const l of lines) {
    // A gap (no value) breaks the line.
    let d = "", pen = false;
    for (const p of pts) {
      const v = p[l.key];
      if (v === null || v === undefined || now - p.t > span) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    }
    const path = document.createElementNS(svgNS, "path");
    path.setAttribute("d", d || "M0 0");
    path.setAttribute("class", l.cls);
    svg.append(path);
    if (l.dots) {
      // Latency has gaps (seconds without appends): a dot shows a lone value.
      for (const p of pts) {
        const v = p[l.key];
        if (v === null || v === undefined || now - p.t > span) continue;
        const c = document.createElementNS(svgNS, "circle");
        c.setAttribute("cx", x(p.t).toFixed(1)); c.setAttribute("cy", y(v).toFixed(1)); c.setAttribute("r", 2);
        c.setAttribute("class", l.cls + " dot");
        svg.append(c);
      }
    }
  }
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function renderCharts() {
  chart($("chart-rate"), [{ key: "entries_per_s", cls: "rate" }]);
  chart($("chart-latency"), [{ key: "latency_mean_ms", cls: "mean", dots: true }, { key: "latency_p99_ms", cls: "p99", dots: true }]);
  const last = state.series[state.series.length - 1];
  $("rate-now").textContent = last ? fmt(last.entries_per_s) + "/s now" : "";
  $("lat-now").textContent = last && last.latency_mean_ms !== null ? fmt(last.latency_mean_ms) + " / " + fmt(last.latency_p99_ms) + " ms now" : "";
}

function addSample(s) {
  if (!s) return;
  if (state.series.length && state.series[state.series.length - 1].t >= s.t) return;
  state.series.push(s);
  while (state.series.length > state.seriesSeconds) state.series.shift();
  renderCharts();
}

function addEvent(ev) {
  if (ev.seq <= state.lastEventSeq) return; // the snapshot had it
  state.lastEventSeq = ev.seq;
  const li = el("li");
  li.dataset.seq = ev.seq;
  li.append(el("span", new Date(ev.time).toLocaleTimeString(), "time"), el("span", ev.level, "level " + ev.level), el("span", ev.msg, "msg"));
  if (ev.attrs && ev.attrs.length) {
    li.append(el("span", ev.attrs.map(a => a.key + "=" + a.value).join(" "), "attrs"));
  }
  const list = $("events");
  list.prepend(li);
  while (list.children.length > maxEvents) list.lastElementChild.remove();
}

function addEntries(ents) {
  const body = $("tail").tBodies[0];
  for (const e of ents) {
    if (e.index <= state.lastIndex) continue;
    state.lastIndex = e.index;
    const tr = el("tr");
    tr.dataset.index = e.index;
    const td = el("td", null, "value");
    if (e.value_base64 !== undefined) {
      td.append(el("span", "base64 ", "b64"), document.createTextNode(e.value_base64));
    } else {
      td.textContent = e.value;
    }
    if (e.truncated) td.append(el("span", " … (" + e.size + " bytes)", "b64"));
    tr.append(el("td", e.index), td);
    body.prepend(tr);
  }
  while (body.children.length > state.tailMax) body.lastElementChild.remove();
  // The log grew since the last status: say so at once.
  if (state.node && state.lastIndex > state.node.last_index) {
    state.node.last_index = state.lastIndex;
    renderBounds(state.node);
  }
}

function snapshot(s) {
  // A reconnect (perhaps to a restarted node) starts the lists anew.
  state.lastEventSeq = 0;
  state.lastIndex = -1;
  $("events").replaceChildren();
  $("tail").tBodies[0].replaceChildren();
  state.seriesSeconds = s.limits.series_seconds;
  state.tailMax = s.limits.tail;
  state.series = s.series || [];
  renderStatus(s);
  renderCharts();
  $("events-off").hidden = s.events_on;
  $("tail-off").hidden = s.tail_on;
  $("tail").hidden = !s.tail_on;
  for (const ev of s.events || []) addEvent(ev);
  addEntries(s.tail || []);
}

function connect() {
  const es = new EventSource("api/stream");
  const conn = $("conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn on"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; };
  es.addEventListener("snapshot", m => snapshot(JSON.parse(m.data)));
  es.addEventListener("status", m => { const st = JSON.parse(m.data); renderStatus(st); addSample(st.sample); });
  es.addEventListener("event", m => addEvent(JSON.parse(m.data)));
  es.addEventListener("entries", m => addEntries(JSON.parse(m.data)));
  es.addEventListener("dropped", m => banner("The server dropped this page's live stream: " + JSON.parse(m.data).reason));
}

connect();
