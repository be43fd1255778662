package bench

import (
	"bytes"
	"image"
	"image/png"
	"testing"
)

// plotReport is a failover-shaped report: two targets with errors, a leader
// change and a fault, whose lines start at t=0 at the top of the panel
// (where a legend inside the panel used to sit).
func plotReport(names ...string) *Report {
	rep := &Report{Config: ReportConfig{Workload: WorkloadMixed, Consistency: Session, Concurrency: 8}}
	for i, name := range names {
		tr := TargetReport{Name: name}
		for s := 0; s < 12; s++ {
			p := Point{T: float64(s), ActiveS: 1, OK: 900, Rate: 900 - float64(100*i), P99: 3 + float64(s%3)}
			if s == 4 {
				p.Errors, p.Rate = 40, 10
			}
			tr.Timeline = append(tr.Timeline, p)
		}
		tr.LeaderChanges = []LeaderChange{{At: 5.2, From: name + "-a", To: name + "-b"}}
		rep.Targets = append(rep.Targets, tr)
	}
	rep.Faults = []FaultEvent{{At: 4, Name: "kill -9 " + names[0]}}
	return rep
}

func decodePlot(t *testing.T, rep *Report) image.Image {
	t.Helper()
	var buf bytes.Buffer
	if err := rep.WritePlot(&buf); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("decoding the plot: %v", err)
	}
	return img
}

// TestPlotLegendBelowPanels: the legend lives in a strip below the panels,
// so it covers no data. Proof by pixels: two reports that differ only in
// the names the legend prints draw identical panels, and differ inside the
// legend strip (where the names are).
func TestPlotLegendBelowPanels(t *testing.T) {
	short := decodePlot(t, plotReport("p", "d"))
	long := decodePlot(t, plotReport("a-much-longer-proxy-name", "a-much-longer-direct-name"))
	if short.Bounds() != long.Bounds() {
		t.Fatalf("sizes differ: %v vs %v", short.Bounds(), long.Bounds())
	}
	b := short.Bounds()
	stripPx := int(float64(newPlotLayout(legendEntries(plotReport("p", "d"))).legendHeight.Points()) * plotDPI / 72)
	if stripPx <= 0 || stripPx >= b.Dy()/2 {
		t.Fatalf("legend strip %d px of %d", stripPx, b.Dy())
	}
	panelsBottom := b.Max.Y - stripPx
	if d := firstDiff(short, long, image.Rect(b.Min.X, b.Min.Y, b.Max.X, panelsBottom)); d != nil {
		t.Errorf("the panels change with the legend's text at %v: the legend is drawn over the data", *d)
	}
	if firstDiff(short, long, image.Rect(b.Min.X, panelsBottom, b.Max.X, b.Max.Y)) == nil {
		t.Error("the legend strip does not change with the legend's text: no legend drawn there")
	}
}

// TestPlotLegendGrowsTheImage: more entries make more legend rows, not a
// smaller plot.
func TestPlotLegendGrowsTheImage(t *testing.T) {
	few := newPlotLayout(3)
	many := newPlotLayout(14)
	if few.rows != 1 || many.rows != 5 {
		t.Errorf("rows: %d and %d, want 1 and 5", few.rows, many.rows)
	}
	if many.height-many.legendHeight != plotPanelsHeight || few.height-few.legendHeight != plotPanelsHeight {
		t.Error("the panels' height depends on the legend")
	}
	if none := newPlotLayout(0); none.legendHeight != 0 || none.height != plotPanelsHeight {
		t.Errorf("no entries: %+v", none)
	}
}

func legendEntries(rep *Report) int {
	n := len(rep.Faults)
	for _, t := range rep.Targets {
		n += 2 + len(t.LeaderChanges) // ops/s, errors/s (the timelines have errors)
	}
	return n
}

func firstDiff(a, b image.Image, r image.Rectangle) *image.Point {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if a.At(x, y) != b.At(x, y) {
				return &image.Point{X: x, Y: y}
			}
		}
	}
	return nil
}
