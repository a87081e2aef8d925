package bench

import (
	"cmp"
	"fmt"
	"html"
	"math"
	"slices"
	"strings"
)

// The chart: two panels side by side, throughput against clients and
// latency (p50 solid, p99 dashed) against clients, one line per system.
const (
	svgWidth, svgHeight = 960, 420
	panelWidth          = 440
	marginLeft          = 70
	marginRight         = 20
	marginTop           = 70
	marginBottom        = 55
)

var systemColors = map[string]string{"paxosd": "#1f77b4", "etcd": "#d62728", "zookeeper": "#2ca02c"}

func systemColor(s string) string {
	if c, ok := systemColors[s]; ok {
		return c
	}
	return "#7f7f7f"
}

// panel maps data to one panel's pixels: x is log2(clients); y is linear
// from 0 to ymax, or (log) logarithmic from ymin to ymax.
type panel struct {
	x0, y0, w, h float64 // plot area
	xs           []int   // client counts, ascending
	ymin, ymax   float64
	log          bool
}

func (p panel) px(clients int) float64 {
	if len(p.xs) == 1 {
		return p.x0 + p.w/2
	}
	lo, hi := math.Log2(float64(p.xs[0])), math.Log2(float64(p.xs[len(p.xs)-1]))
	return p.x0 + (math.Log2(float64(clients))-lo)/(hi-lo)*p.w
}

func (p panel) py(v float64) float64 {
	if p.log {
		v = min(max(v, p.ymin), p.ymax)
		return p.y0 + p.h - (math.Log10(v)-math.Log10(p.ymin))/(math.Log10(p.ymax)-math.Log10(p.ymin))*p.h
	}
	return p.y0 + p.h - v/p.ymax*p.h
}

// ticks returns the y axis's tick values: multiples of step from 0, or on
// a log axis 1, 2 and 5 times each power of ten.
func (p panel) ticks(step float64) []float64 {
	var out []float64
	if !p.log {
		for v := 0.0; v <= p.ymax+step/2; v += step {
			out = append(out, v)
		}
		return out
	}
	for decade := p.ymin; decade < p.ymax*1.001; decade *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := decade * m; v <= p.ymax*1.001 {
				out = append(out, v)
			}
		}
	}
	return out
}

// logRange returns powers of ten around [lo, hi].
func logRange(lo, hi float64) (float64, float64) {
	if lo <= 0 || math.IsNaN(lo) {
		lo = 0.1
	}
	if hi <= lo {
		hi = lo * 10
	}
	return math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
}

// niceMax returns a round axis maximum at or above v, and its tick step.
func niceMax(v float64) (top, step float64) {
	if v <= 0 || math.IsNaN(v) {
		return 1, 0.2
	}
	raw := v / 5
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	return math.Ceil(v/step) * step, step
}

// tickLabel formats an axis value: 12k, 1.5k, 250, 0.5.
func tickLabel(v float64) string {
	switch {
	case v >= 1000:
		return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.1f", v/1000), "0"), ".") + "k"
	case v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

// SVG draws the comparison results as a hand-written SVG chart.
func (rep *Report) SVG() []byte {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	var xs []int
	var systems []string
	bySystem := map[string][]*Result{}
	var maxTput, maxLat float64
	minLat := math.Inf(1)
	for _, r := range rep.Compared {
		if !slices.Contains(xs, r.Clients) {
			xs = append(xs, r.Clients)
		}
		if !slices.Contains(systems, r.System) {
			systems = append(systems, r.System)
		}
		bySystem[r.System] = append(bySystem[r.System], r)
		maxTput = max(maxTput, r.Throughput)
		maxLat = max(maxLat, r.P99)
		minLat = min(minLat, r.P50)
	}
	slices.Sort(xs)
	size := rep.Compared[0].Size

	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, svgHeight, svgWidth, svgHeight)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="22" text-anchor="middle" font-size="15" font-weight="bold">%s</text>`+"\n", svgWidth/2,
		html.EscapeString(fmt.Sprintf("3-node clusters, closed loop, %s values, fsync on (%s)", byteSize(size), rep.Machine.Date)))
	// Legend.
	lx := float64(svgWidth)/2 - float64(len(systems))*55
	for i, s := range systems {
		x := lx + float64(i)*110
		p(`<line x1="%.1f" y1="42" x2="%.1f" y2="42" stroke="%s" stroke-width="3"/>`, x, x+24, systemColor(s))
		p(`<text x="%.1f" y="46">%s</text>`+"\n", x+30, html.EscapeString(s))
	}

	tput := panel{x0: marginLeft, y0: marginTop, w: panelWidth - marginLeft - marginRight, h: svgHeight - marginTop - marginBottom, xs: xs}
	lat := tput
	lat.x0 += panelWidth + 40
	var tputStep float64
	tput.ymax, tputStep = niceMax(maxTput)
	lat.log = true
	lat.ymin, lat.ymax = logRange(minLat, maxLat)

	axes := func(pn panel, step float64, title, ylabel string) {
		p(`<text x="%.1f" y="%.1f" text-anchor="middle" font-weight="bold">%s</text>`+"\n", pn.x0+pn.w/2, pn.y0-8, html.EscapeString(title))
		for _, v := range pn.ticks(step) {
			y := pn.py(v)
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`, pn.x0, y, pn.x0+pn.w, y)
			p(`<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", pn.x0-6, y+4, tickLabel(v))
		}
		for _, c := range pn.xs {
			x := pn.px(c)
			p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>`, x, pn.y0, x, pn.y0+pn.h)
			p(`<text x="%.1f" y="%.1f" text-anchor="middle">%d</text>`+"\n", x, pn.y0+pn.h+18, c)
		}
		p(`<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", pn.x0, pn.y0, pn.w, pn.h)
		p(`<text x="%.1f" y="%.1f" text-anchor="middle">clients</text>`+"\n", pn.x0+pn.w/2, pn.y0+pn.h+40)
		p(`<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", pn.x0-52, pn.y0+pn.h/2, html.EscapeString(ylabel))
	}
	line := func(pn panel, rs []*Result, value func(*Result) float64, color, dash string) {
		var pts []string
		for _, r := range rs {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", pn.px(r.Clients), pn.py(value(r))))
		}
		p(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), color, dash)
		for _, r := range rs {
			p(`<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", pn.px(r.Clients), pn.py(value(r)), color)
		}
	}
	axes(tput, tputStep, "Throughput", "requests per second")
	axes(lat, 0, "Latency: p50 solid, p99 dashed (log scale)", "milliseconds")
	for _, s := range systems {
		rs := bySystem[s]
		line(tput, rs, func(r *Result) float64 { return r.Throughput }, systemColor(s), "")
		line(lat, rs, func(r *Result) float64 { return r.P50 }, systemColor(s), "")
		line(lat, rs, func(r *Result) float64 { return r.P99 }, systemColor(s), ` stroke-dasharray="6 4"`)
	}
	// Throughput labels above the points, pushed apart where they would
	// overlap: at each client count, from the lowest point up.
	for _, c := range xs {
		var at []*Result
		for _, r := range rep.Compared {
			if r.Clients == c {
				at = append(at, r)
			}
		}
		slices.SortFunc(at, func(a, b *Result) int { return cmp.Compare(a.Throughput, b.Throughput) })
		prev := math.Inf(1)
		for _, r := range at {
			y := min(tput.py(r.Throughput)-7, prev-13)
			prev = y
			// At the panel's edges the label goes inward, clear of the axis.
			x, anchor := tput.px(c), "middle"
			switch {
			case len(xs) > 1 && c == xs[0]:
				x, anchor = x+5, "start"
			case len(xs) > 1 && c == xs[len(xs)-1]:
				x, anchor = x-5, "end"
			}
			p(`<text x="%.1f" y="%.1f" text-anchor="%s" font-size="10" fill="%s" stroke="white" stroke-width="3" paint-order="stroke">%s</text>`+"\n",
				x, y, anchor, systemColor(r.System), thousands(r.Throughput))
		}
	}
	p("</svg>\n")
	return []byte(b.String())
}
