package quickstart

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/milvus-io/milvus/client/v2/entity"

	"github.com/milvus-ha-proxy/milvus-ha-proxy/admin"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/internal/testutil"
	"github.com/milvus-ha-proxy/milvus-ha-proxy/test/testenv"
)

// chromium finds a headless-capable Chromium: $CHROMIUM, else Debian's
// chromium (which `make ui-deps` installs when run as root).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	skipOrFail(t, "no chromium on PATH (make ui-deps installs Debian's chromium when run as root)")
	return ""
}

// headless runs Chromium headless on url with extra flags and returns its
// stdout. Its whole process group is killed if it outlives the deadline.
func headless(t *testing.T, bin, url string, flags ...string) []byte {
	t.Helper()
	args := []string{"--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,900",
		// The page's first fetch and render finish within this much
		// virtual time; the interval refresh keeps running after.
		"--virtual-time-budget=5000"}
	if os.Geteuid() == 0 {
		args = append(args, "--no-sandbox") // Chromium refuses to sandbox as root
	}
	args = append(append(args, flags...), url)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", flags, err, tail(stderr.String(), 2000))
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestStatusPageInChromium opens the admin port's /ui on a demo that has
// served reads and made a switchover, in headless Chromium: the DOM after
// the page's scripts ran must show the clusters, the new leader, the
// charts' lines and the leader change, and the screenshot must be a
// rendered page (not blank, the clusters' colours drawn).
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	d := startDemo(t)

	// Traffic: reads that alternatives serve (Bounded), then a switchover
	// a -> b, then more reads.
	c := testenv.Connect(t, d.addr, nil)
	testenv.MakeCollection(t, c, "ui_docs")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids := make([]int64, 50)
	for i := range ids {
		ids[i] = int64(i)
	}
	if err := testenv.Insert(ctx, c, "ui_docs", ids...); err != nil {
		t.Fatal(err)
	}
	search := func(n int) {
		for i := 0; i < n; i++ {
			if err := testenv.Search(ctx, c, "ui_docs", int64(i%50), entity.ClBounded); err != nil {
				t.Fatalf("search %d: %v", i, err)
			}
		}
	}
	search(40)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.admin+"/api/v1/switchover", strings.NewReader(`{"to":"b"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("switchover to b: HTTP %d\n%s", resp.StatusCode, d.log())
	}
	search(40)
	// The history is sampled every 2s: wait until it holds the change and
	// reads after it.
	testutil.EventuallyWhy(t, 30*time.Second, "history with the switchover and reads", func() (bool, string) {
		code, body := get(t, "http://"+d.admin+"/api/v1/history")
		var h admin.History
		if code != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil {
			return false, body
		}
		if len(h.Changes) == 0 || len(h.Samples) < 3 {
			return false, "no change or too few samples yet"
		}
		var reads int64
		for _, c := range h.Samples[len(h.Samples)-1].Clusters {
			reads += c.Reads
		}
		return reads >= 80, "reads in the last sample: " + body
	})

	url := "http://" + d.admin + "/ui"
	wants := []*regexp.Regexp{
		row("a", "alternative"), row("b", "leader"), row("c", "alternative"),
		regexp.MustCompile(`<b id="leader">b</b>`),
		regexp.MustCompile(`<span id="ready" class="pill ok">ready</span>`),
		regexp.MustCompile(`<td>switchover</td><td>a → b</td><td>1</td><td>ok</td>`),
		regexp.MustCompile(`<svg id="lagChart"[^>]*>.*?<polyline `),
		regexp.MustCompile(`<svg id="readChart"[^>]*>.*?<polyline `),
	}
	// The page shows the proxy's state at the moment it loaded; on a
	// loaded machine a health probe can time out and the proxy be briefly
	// not ready, so a page that misses is loaded again (as its own
	// refresh would), up to 3 times.
	var missed []string
	var dom string
	for attempt := 1; attempt <= 3; attempt++ {
		dom = string(headless(t, bin, url, "--dump-dom"))
		missed = missed[:0]
		for _, want := range wants {
			if !want.MatchString(dom) {
				missed = append(missed, want.String())
			}
		}
		if len(missed) == 0 {
			break
		}
		t.Logf("attempt %d: the rendered page does not match %q", attempt, missed)
		time.Sleep(2 * time.Second)
	}
	if len(missed) > 0 {
		text := regexp.MustCompile(`(?s)<script.*?</script>|<style.*?</style>|<[^>]+>`).ReplaceAllString(dom, " ")
		t.Fatalf("the rendered page does not match %q\npage text:\n%s", missed, strings.Join(strings.Fields(text), " "))
	}

	shot := filepath.Join(t.TempDir(), "ui.png")
	headless(t, bin, url, "--screenshot="+shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	checkScreenshot(t, img)
}

// row matches cluster id's table row with its role, within the row.
func row(id, role string) *regexp.Regexp {
	return regexp.MustCompile(`<tr data-cluster="` + id + `">(?:[^<]|<[^/]|</[^t]|</t[^r])*<td class="role">` + role + `</td>`)
}

// checkScreenshot: a rendered status page has many colours, a fair share
// of pixels that are not the background, and the swatch colours of
// clusters a, b and c (the page's palette, in order of appearance).
func checkScreenshot(t *testing.T, img image.Image) {
	t.Helper()
	b := img.Bounds()
	if b.Dx() < 800 || b.Dy() < 600 {
		t.Fatalf("screenshot %v, want the 1280x900 window", b)
	}
	colors := map[color.RGBA]int{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			colors[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), 255}]++
		}
	}
	var bg color.RGBA
	for c, n := range colors {
		if n > colors[bg] {
			bg = c
		}
	}
	total := b.Dx() * b.Dy()
	if share := 1 - float64(colors[bg])/float64(total); share < 0.05 {
		t.Errorf("screenshot is nearly blank: %.1f%% of pixels differ from the background %v", 100*share, bg)
	}
	if len(colors) < 50 {
		t.Errorf("screenshot has %d colours: not a rendered page", len(colors))
	}
	for i, hex := range []color.RGBA{{0x1f, 0x77, 0xb4, 255}, {0xd6, 0x27, 0x28, 255}, {0x2c, 0xa0, 0x2c, 255}} {
		if colors[hex] < 50 {
			t.Errorf("cluster %c's colour %v: %d pixels, want its swatches and lines", 'a'+i, hex, colors[hex])
		}
	}
}
