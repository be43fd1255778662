package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePlot renders the report's timelines as a PNG: throughput (and
// errors) per second on top, p99 latency per second below, one colour per
// target, with leader changes and injected faults marked as vertical lines
// across both panels. The legend is drawn below the panels, in columns, so
// it never hides a line (inside a panel it covered the start of the
// timeline, where a failover's gap often is).
func (rep *Report) WritePlot(w io.Writer) error {
	tput := plot.New()
	tput.Title.Text = fmt.Sprintf("%s, %s, concurrency %d", rep.Config.Workload, rep.Config.Consistency, rep.Config.Concurrency)
	tput.Y.Label.Text = "ops/s"
	lat := plot.New()
	lat.Y.Label.Text = "p99 ms"
	lat.X.Label.Text = "seconds since measurement start"
	for _, p := range []*plot.Plot{tput, lat} {
		p.Add(plotter.NewGrid())
	}
	var legend legendItems

	var xmax float64
	for i, t := range rep.Targets {
		col := plotutil.Color(i)
		okLegend, errLegend, latLegend := true, true, true
		for _, seg := range segments(t.Timeline) {
			ok := make(plotter.XYs, len(seg))
			errs := make(plotter.XYs, len(seg))
			p99 := make(plotter.XYs, len(seg))
			anyErr := false
			seg = trimSlivers(seg)
			if len(seg) == 0 {
				continue
			}
			ok, errs, p99 = ok[:len(seg)], errs[:len(seg)], p99[:len(seg)]
			for j, pt := range seg {
				x := pt.T + 0.5 // the middle of its second
				ok[j] = plotter.XY{X: x, Y: pt.Rate}
				errs[j] = plotter.XY{X: x, Y: float64(pt.Errors) / max(pt.ActiveS, 0.05)}
				p99[j] = plotter.XY{X: x, Y: pt.P99}
				anyErr = anyErr || pt.Errors > 0
				xmax = math.Max(xmax, pt.T+1)
			}
			if err := addLine(tput, &legend, ok, col, nil, t.Name+" ops/s", &okLegend); err != nil {
				return err
			}
			if anyErr {
				dash := []vg.Length{vg.Points(2), vg.Points(2)}
				if err := addLine(tput, &legend, errs, col, dash, t.Name+" errors/s", &errLegend); err != nil {
					return err
				}
			}
			// The p99 line has the target's colour and style of the ops/s
			// line: one legend entry names both.
			if err := addLine(lat, nil, p99, col, nil, t.Name, &latLegend); err != nil {
				return err
			}
		}
	}

	red := color.RGBA{R: 200, A: 255}
	orange := color.RGBA{R: 230, G: 140, A: 255}
	for _, t := range rep.Targets {
		for _, lc := range t.LeaderChanges {
			addMark(tput, lat, &legend, lc.At, red, fmt.Sprintf("leader %s→%s", lc.From, lc.To), []vg.Length{vg.Points(6), vg.Points(3)})
			xmax = math.Max(xmax, lc.At)
		}
	}
	for _, f := range rep.Faults {
		addMark(tput, lat, &legend, f.At, orange, "fault: "+f.Name, []vg.Length{vg.Points(1), vg.Points(3)})
		xmax = math.Max(xmax, f.At)
	}

	for _, p := range []*plot.Plot{tput, lat} {
		p.X.Min = 0
		p.X.Max = math.Max(1, xmax)
		p.Y.Min = 0
		if p.Y.Max <= 0 {
			p.Y.Max = 1
		}
		p.Y.Max *= 1.1
	}

	lay := newPlotLayout(len(legend))
	img := vgimg.NewWith(vgimg.UseWH(lay.width, lay.height), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	panels := draw.Crop(dc, 0, 0, lay.legendHeight, 0) // everything above the legend strip
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4, PadY: vg.Millimeter * 4}
	cs := plot.Align([][]*plot.Plot{{tput}, {lat}}, tiles, panels)
	tput.Draw(cs[0][0])
	lat.Draw(cs[1][0])
	legend.draw(dc, lay)
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

// trimSlivers drops a segment's first and last points when the target
// was measured for only a sliver of that second (the rounding edges of a
// phase), where a rate means little and would draw a false dip.
func trimSlivers(seg []Point) []Point {
	for len(seg) > 0 && seg[len(seg)-1].ActiveS < 0.2 {
		seg = seg[:len(seg)-1]
	}
	for len(seg) > 0 && seg[0].ActiveS < 0.2 {
		seg = seg[1:]
	}
	return seg
}

// segments splits a timeline at the seconds a target was idle (its rounds
// in compare mode), so lines do not bridge another target's turn.
func segments(tl []Point) [][]Point {
	var out [][]Point
	start := 0
	for i := 1; i <= len(tl); i++ {
		if i == len(tl) || tl[i].T-tl[i-1].T > 1.5 {
			if i > start {
				out = append(out, tl[start:i])
			}
			start = i
		}
	}
	return out
}

func addLine(p *plot.Plot, items *legendItems, xys plotter.XYs, col color.Color, dashes []vg.Length, name string, legend *bool) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return fmt.Errorf("plotting %s: %w", name, err)
	}
	l.Color = col
	l.Width = vg.Points(1.2)
	l.Dashes = dashes
	p.Add(l)
	if *legend && items != nil {
		items.add(name, l)
	}
	*legend = false
	return nil
}

func addMark(top, bottom *plot.Plot, items *legendItems, x float64, col color.Color, name string, dashes []vg.Length) {
	style := draw.LineStyle{Color: col, Width: vg.Points(1.5), Dashes: dashes}
	v := &vline{x: x, style: style}
	top.Add(v)
	bottom.Add(v)
	items.add(fmt.Sprintf("%s (%.1fs)", name, x), v)
}

// The plot's geometry: the panels keep their size whatever the legend's;
// the image grows by the legend strip under them.
const (
	plotDPI          = 96
	plotWidth        = 10 * vg.Inch
	plotPanelsHeight = 7 * vg.Inch
	legendColumns    = 3
	legendRowHeight  = 16 * vg.Length(1) // points: an 11 pt font and its spacing
	legendMargin     = 6 * vg.Millimeter
)

// plotLayout is where the panels and the legend go on the image.
type plotLayout struct {
	width, height vg.Length
	// legendHeight is the strip at the bottom of the image, below the
	// panels, that holds the legend; rows entries per column.
	legendHeight vg.Length
	rows         int
}

func newPlotLayout(entries int) plotLayout {
	rows := (entries + legendColumns - 1) / legendColumns
	l := plotLayout{width: plotWidth, rows: rows}
	if rows > 0 {
		l.legendHeight = vg.Length(rows)*legendRowHeight + legendMargin
	}
	l.height = plotPanelsHeight + l.legendHeight
	return l
}

// legendItems is the plot's legend, drawn under the panels.
type legendItems []legendItem

type legendItem struct {
	name  string
	thumb plot.Thumbnailer
}

func (li *legendItems) add(name string, t plot.Thumbnailer) {
	*li = append(*li, legendItem{name: name, thumb: t})
}

// draw fills the legend strip column by column, top to bottom.
func (li legendItems) draw(dc draw.Canvas, lay plotLayout) {
	if len(li) == 0 {
		return
	}
	strip := draw.Crop(dc, 4*vg.Millimeter, -4*vg.Millimeter, 0, -(dc.Max.Y - dc.Min.Y - lay.legendHeight))
	colWidth := (strip.Max.X - strip.Min.X) / legendColumns
	for c := 0; c < legendColumns; c++ {
		lo := c * lay.rows
		if lo >= len(li) {
			break
		}
		hi := min(lo+lay.rows, len(li))
		leg := plot.NewLegend()
		leg.Top, leg.Left = true, true
		leg.TextStyle.Font.Size = 11
		leg.Padding = legendRowHeight - 11
		for _, it := range li[lo:hi] {
			leg.Add(it.name, it.thumb)
		}
		col := strip
		col.Min.X = strip.Min.X + vg.Length(c)*colWidth
		col.Max.X = col.Min.X + colWidth
		col.Max.Y -= legendMargin / 2
		leg.Draw(col)
	}
}

// vline is a vertical line across the whole plot area at data x.
type vline struct {
	x     float64
	style draw.LineStyle
}

func (v *vline) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	x := trX(v.x)
	c.StrokeLine2(v.style, x, c.Min.Y, x, c.Max.Y)
}

// Thumbnail draws the line in the legend.
func (v *vline) Thumbnail(c *draw.Canvas) {
	y := c.Center().Y
	c.StrokeLine2(v.style, c.Min.X, y, c.Max.X, y)
}
