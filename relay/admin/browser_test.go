package admin_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The organisers' pages in a real browser (issue 11 point 6): headless
// Chromium against a daemon with a batch in it.

// chromiumPath finds Chromium; without it the test skips, except in CI
// (PETITIOND_CI=1), where it must run.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("PETITIOND_CI") == "1" {
		t.Fatal("Chromium is not installed, and PETITIOND_CI=1 requires the browser tests: apt-get install chromium")
	}
	t.Skip("Chromium is not installed (Debian: apt-get install chromium); the browser tests of the organisers' pages are skipped")
	return ""
}

// browserCtx starts headless Chromium with a fresh profile in dir; the
// test's end stops it.
func browserCtx(t *testing.T, dir string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// Start the browser now, without a timeout (a timeout on the first
	// run would end the browser with it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// step runs actions with a deadline, failing the test on error.
func step(t *testing.T, ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression on the page.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(sctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return eval[string](t, ctx, fmt.Sprintf(`document.querySelector(%q).innerText`, sel))
}

// TestBrowser: log in with the reader token, open a batch, search names
// with and without accents, download the CSV; an action (release a held
// letter) is refused with the reader's cookie and from a cross-origin form
// post; the main pages, at 1280 and 390 px wide, never overflow
// sideways, and their screenshots are kept in the test's directory (or in
// $PETITIOND_SCREENSHOTS, to look at them afterwards).
func TestBrowser(t *testing.T) {
	dir := t.TempDir()
	ctx := browserCtx(t, dir)
	p := startPages(t, nil)

	// A page that runs a script, a dialog above all, would be a letter's
	// or a name's doing: there must be none.
	var dialogs atomic.Int32
	if err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}

	// Not logged in: the login form, in Spanish.
	step(t, ctx, "open the pages", chromedp.Navigate(p.base+"/batches/1"), chromedp.WaitVisible(chromedp.CSS("#token")))
	if loc := eval[string](t, ctx, `location.pathname + location.search`); loc != "/login?next=%2Fbatches%2F1" {
		t.Errorf("not logged in: at %s, want the login form", loc)
	}
	if got := eval[string](t, ctx, `document.documentElement.lang`); got != "es" {
		t.Errorf("lang %q", got)
	}
	// A wrong key first.
	step(t, ctx, "log in with a wrong key", chromedp.SendKeys(chromedp.CSS("#token"), "no-es-la-clave"),
		chromedp.Submit(chromedp.CSS("#token")), chromedp.WaitVisible(chromedp.CSS("#wrong")))
	step(t, ctx, "log in with the reader token", chromedp.SendKeys(chromedp.CSS("#token"), readerToken),
		chromedp.Submit(chromedp.CSS("#token")), chromedp.WaitVisible(chromedp.CSS("#signers")))
	if loc := eval[string](t, ctx, `location.pathname`); loc != "/batches/1" {
		t.Errorf("after logging in: at %s, want the page asked for", loc)
	}
	signers := text(t, ctx, "#signers")
	for _, want := range []string{"María Pérez <maria@ed.test>", "<script>alert(1)</script> <script@rsa.test>", "firma DKIM de gmail.com"} {
		if !strings.Contains(signers, want) {
			t.Errorf("batch page, signers: lacks %q:\n%s", want, signers)
		}
	}
	if n := eval[int](t, ctx, `document.scripts.length`); n != 0 {
		t.Errorf("the batch page has %d scripts", n)
	}
	if body := text(t, ctx, "main"); !strings.Contains(body, "| <b>hola</b> & <img src=x onerror=alert(2)> adiós") {
		t.Errorf("a letter's text does not read as written:\n%s", body)
	}

	// Home, by the menu.
	step(t, ctx, "home", chromedp.Click(chromedp.CSS(`nav a[href="/"]`)), chromedp.WaitVisible(chromedp.CSS("#counted")))
	if got := text(t, ctx, "#counted"); got != "4 cartas contadas" {
		t.Errorf("tally %q", got)
	}
	if got := text(t, ctx, "#batches"); !strings.Contains(got, "familias@ofapp.test: entregado el ") {
		t.Errorf("batches:\n%s", got)
	}

	// Search a name with an accent, and without.
	for q, want := range map[string]string{"Núñez": "Pedro Núñez <pedro@ed.test>", "maria perez": "María Pérez <maria@ed.test>"} {
		step(t, ctx, "search "+q, chromedp.Navigate(p.base+"/search"), chromedp.WaitVisible(chromedp.CSS("#q")),
			chromedp.SendKeys(chromedp.CSS("#q"), q), chromedp.Submit(chromedp.CSS("#q")), chromedp.WaitVisible(chromedp.CSS("#found")))
		if found := text(t, ctx, "#found"); !strings.HasPrefix(found, "1 carta tiene") {
			t.Errorf("search %q: %q", q, found)
		}
		if got := text(t, ctx, "#results"); !strings.Contains(got, want) {
			t.Errorf("search %q found:\n%s", q, got)
		}
	}

	// Download the batch's CSV by its link.
	downloads := filepath.Join(dir, "downloads")
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	step(t, ctx, "download the CSV", chromedp.Navigate(p.base+"/batches/1"), chromedp.WaitVisible(chromedp.CSS("#csv")),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
				Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: downloads, EventsEnabled: ptr(true),
			})
			return err
		}),
		chromedp.Click(chromedp.CSS("#csv")))
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	var csvFile string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatalf("download canceled")
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			csvFile = filepath.Join(downloads, ev.GUID)
			break
		}
		if dctx.Err() != nil {
			t.Fatal("the download did not complete")
		}
	}
	cancel()
	raw, err := os.ReadFile(csvFile)
	if err != nil {
		t.Fatal(err)
	}
	rows := readCSV(t, string(raw))
	if len(rows) != 3 || rows[0][1] != "María Pérez" || rows[0][4] != p.ids[0] {
		t.Errorf("downloaded CSV rows: %q", rows)
	}

	// An action with the reader's cookie: a same-origin form post from the
	// browser, as a page of the daemon's own origin would make it.
	step(t, ctx, "release with the reader's cookie", chromedp.Navigate(p.base+"/"), chromedp.WaitVisible(chromedp.CSS("#counted")))
	eval[chromedp.Void](t, ctx, fmt.Sprintf(`(() => { const f = document.createElement('form'); f.method = 'POST';
		f.action = '/api/held/%s/release'; document.body.append(f); f.submit(); })()`, p.held))
	waitBody(t, ctx, "missing or wrong admin token")
	p.stillHeld(t, "a release with the reader's cookie")

	// A cross-origin form post, from another site's page (localhost is
	// another site than 127.0.0.1), the way an attacker's page does it.
	attacker := attackerPage(t, fmt.Sprintf(`<form id="f" method="POST" enctype="text/plain" action="%s/api/held/%s/release">
<input name="x" value="y"></form><script>document.getElementById('f').submit()</script>`, p.base, p.held))
	step(t, ctx, "cross-origin form post", chromedp.Navigate(attacker))
	waitBody(t, ctx, "cross-origin request refused")
	p.stillHeld(t, "a cross-origin form post")

	// Screenshots of the main pages at 1280 and 390 px, and nothing wider
	// than the screen.
	shots := filepath.Join(dir, "screenshots")
	if d := os.Getenv("PETITIOND_SCREENSHOTS"); d != "" {
		shots = d // to look at them after the test
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, width := range []int64{1280, 390} {
		opts := []chromedp.EmulateViewportOption{}
		if width < 600 {
			opts = append(opts, chromedp.EmulateScale(3), chromedp.EmulateMobile)
		}
		step(t, ctx, "viewport", chromedp.EmulateViewport(width, 844, opts...))
		for name, path := range map[string]string{"home": "/", "batch": "/batches/1", "search": "/search?q=libertad", "login": "/login"} {
			step(t, ctx, name, chromedp.Navigate(p.base+path), chromedp.WaitVisible(chromedp.CSS("main")))
			// The viewport's width is the root's clientWidth: a phone's
			// window.innerWidth grows with a page too wide for it.
			sw := eval[int](t, ctx, `document.documentElement.scrollWidth`)
			vw := eval[int](t, ctx, `document.documentElement.clientWidth`)
			if vw != int(width) {
				t.Errorf("%s at %d px: the viewport is %d px wide", name, width, vw)
			}
			if sw > vw {
				t.Errorf("%s at %d px: the page is %d px wide, the screen %d px", name, width, sw, vw)
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(shots, fmt.Sprintf("%s-%d.png", name, width))
			if err := os.WriteFile(file, png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("screenshots in %s", shots)
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d script dialogs opened", n)
	}
}

// waitBody waits until the page's text has want.
func waitBody(t *testing.T, ctx context.Context, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page never said %q; it says %q", want, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// attackerPage serves html on another site (localhost) and returns its URL.
func attackerPage(t *testing.T, html string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, html)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "http://localhost:" + port + "/"
}

func ptr[T any](v T) *T { return &v }
