package batch

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCSVSafe(t *testing.T) {
	tests := map[string]string{
		"Ana Pérez":              "Ana Pérez",
		"":                       "",
		"=1+1":                   "'=1+1",
		"+cmd|' /C calc'!A0":     "'+cmd|' /C calc'!A0",
		"@SUM(1+1)":              "'@SUM(1+1)",
		"-2+3":                   "'-2+3",
		"\t=1+1":                 "\t'=1+1",
		" =1+1":                  "' =1+1",
		`"=1+1"`:                 `'"=1+1"`,
		"＝1+1":                   "'＝1+1",
		"Pepa;=1+1;":             "Pepa;'=1+1;",
		"Pepa; =1+1":             "Pepa;' =1+1",
		`Pepa;"=1+1";x`:          `Pepa;'"=1+1";x`,
		"a,=1+1,b\t@x":           "a,'=1+1,b\t'@x",
		"=a;=b":                  "'=a;'=b",
		"Bob, Jr.":               "Bob, Jr.",
		"María-José ; Soto":      "María-José ; Soto",
		"a;b;c":                  "a;b;c",
		"2024-05-06T06:00-04:00": "2024-05-06T06:00-04:00",
		"x;":                     "x;",
	}
	for in, want := range tests {
		if got := csvSafe(in); got != want {
			t.Errorf("csvSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

// The CSV is UTF-8 with a byte order mark, and accents survive.
func TestCSVByteOrderMark(t *testing.T) {
	s := baseSpec(Letter{ID: "L1", Received: t0, Name: "María Núñez", Address: "maria@ejemplo.cl", Raw: plainLetter("maria@ejemplo.cl", "x", "y")})
	s.Language = "es"
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	p := parseBatch(t, msg)
	if !strings.HasPrefix(p.csvText, "\xef\xbb\xbfreceived,name,address,dkim_domain,letter_id,verified\r\n") {
		t.Errorf("CSV starts %q", p.csvText[:min(60, len(p.csvText))])
	}
	if rows := readCSV(t, p.csvText); rows[1][1] != "María Núñez" {
		t.Errorf("name %q", rows[1][1])
	}
}

// hostileNames are display names built to run as formulas in a spreadsheet.
var hostileNames = []string{
	"=1+1",
	"Pepa;=1+1;",
	"+cmd|' /C calc'!A0",
	"@SUM(1+1)",
	"\t=1+1",
	"-2+3",
	"Pepa; =1+1",
	`Pepa;"=1+1";x`,
	"x,=1+1",
	"=HYPERLINK(\"http://x.example\";\"y\")",
}

// needTool returns the path of a program a test checks petitiond against.
// Missing, the test skips, unless PETITIOND_CI=1 (CI installs them all).
func needTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("PETITIOND_CI") == "1" {
		t.Fatalf("%s is not installed (Debian package %s), and PETITIOND_CI=1 says it must be", name, debianPackage)
	}
	t.Skipf("%s is not installed: apt-get install %s to run this test (CI does)", name, debianPackage)
	return ""
}

// The CSV opened by LibreOffice Calc, splitting on ';' and on ',', holds
// not one formula, while a CSV of the same names written without csvSafe
// does: so the check can see a formula when there is one.
func TestCSVInSpreadsheet(t *testing.T) {
	soffice := needTool(t, "soffice", "libreoffice-calc-nogui")
	var letters []Letter
	names := append([]string{"María Núñez"}, hostileNames...)
	for i, name := range names {
		addr := fmt.Sprintf("p%d@ejemplo.cl", i)
		letters = append(letters, Letter{ID: fmt.Sprintf("L%08d", i), Received: t0, Name: name, Address: addr, Raw: plainLetter(addr, "x", "y")})
	}
	// Addresses are data from the network too.
	letters = append(letters, Letter{ID: "L00000099", Received: t0, Name: "Dir", Address: `"a;=1+1"@ejemplo.cl`, Raw: plainLetter("a@ejemplo.cl", "x", "y")})
	s := baseSpec(letters...)
	s.Language, s.Location = "es", santiago
	msg, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	safe := filepath.Join(dir, "lote.csv")
	if err := os.WriteFile(safe, []byte(parseBatch(t, msg).csvText), 0o600); err != nil {
		t.Fatal(err)
	}
	var control bytes.Buffer
	cw := csv.NewWriter(&control)
	for _, l := range letters {
		cw.Write([]string{"2024-05-06T06:00:00-04:00", l.Name, l.Address})
	}
	cw.Flush()
	unsafe := filepath.Join(dir, "control.csv")
	if err := os.WriteFile(unsafe, control.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, sep := range []struct {
		name string
		code int
	}{{"semicolon", ';'}, {"comma", ','}} {
		t.Run(sep.name, func(t *testing.T) {
			out := filepath.Join(dir, sep.name)
			// Import options as hostile as a user can choose: quoted
			// fields not forced to text, spaces trimmed, formulas
			// evaluated (tokens 7, 11 and 13 of the CSV filter).
			filter := fmt.Sprintf("CSV:%d,34,76,1,,0,false,true,false,false,true,false,true", sep.code)
			convert(t, soffice, dir, out, filter, safe, unsafe)
			sheet := readFODS(t, filepath.Join(out, "lote.fods"))
			for _, row := range sheet {
				for _, c := range row {
					if c.formula != "" {
						t.Errorf("cell %q is the formula %q; row %q", c.text, c.formula, row)
					}
				}
			}
			if len(sheet) != len(letters)+1 {
				t.Fatalf("%d rows, want %d", len(sheet), len(letters)+1)
			}
			if sep.code == ',' {
				if got := sheet[0][0].text; got != "received" {
					t.Errorf("first cell %q: the byte order mark shows", got)
				}
				if got := sheet[1][1].text; got != "María Núñez" {
					t.Errorf("accented name reads %q", got)
				}
				if got := sheet[2][1].text; got != "'=1+1" {
					t.Errorf("hostile name reads %q", got)
				}
			}
			formulas := 0
			for _, row := range readFODS(t, filepath.Join(out, "control.fods")) {
				for _, c := range row {
					if c.formula != "" {
						formulas++
					}
				}
			}
			if formulas == 0 {
				t.Errorf("the unprotected control has no formula cell: the check cannot see one")
			}
		})
	}
}

// convert runs LibreOffice headless to turn CSV files into flat ODS, with a
// profile of its own so that it neither waits for nor disturbs another.
func convert(t *testing.T, soffice, dir, outDir, filter string, files ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	profile := filepath.Join(dir, "profile-"+filepath.Base(outDir))
	args := append([]string{"-env:UserInstallation=file://" + profile, "--headless", "--norestore",
		"--convert-to", "fods", "--infilter=" + filter, "--outdir", outDir}, files...)
	cmd := exec.CommandContext(ctx, soffice, args...)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("soffice: %v\n%s", err, out)
	}
}

type cell struct{ text, formula string }

// readFODS reads the first table of a flat ODS file: its rows of cells,
// with each cell's text and formula, if any.
func readFODS(t *testing.T, path string) [][]cell {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("LibreOffice wrote no file: %v", err)
	}
	defer f.Close()
	const tableNS = "urn:oasis:names:tc:opendocument:xmlns:table:1.0"
	const textNS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
	var rows [][]cell
	var cur *cell
	repeat := 1
	inText := false // in a paragraph of a cell: the rest is layout
	d := xml.NewDecoder(f)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return rows
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			switch {
			case e.Name.Space == tableNS && e.Name.Local == "table-row":
				rows = append(rows, nil)
			case e.Name.Space == tableNS && e.Name.Local == "table-cell":
				cur, repeat = &cell{}, 1
				for _, a := range e.Attr {
					switch {
					case a.Name.Space == tableNS && a.Name.Local == "formula":
						cur.formula = a.Value
					case a.Name.Space == tableNS && a.Name.Local == "number-columns-repeated":
						fmt.Sscan(a.Value, &repeat)
					}
				}
			case e.Name.Space == textNS && e.Name.Local == "p" && cur != nil:
				if cur.text != "" {
					cur.text += "\n"
				}
				inText = true
			case e.Name.Space == textNS && e.Name.Local == "s" && cur != nil:
				n := 1
				for _, a := range e.Attr {
					if a.Name.Local == "c" {
						fmt.Sscan(a.Value, &n)
					}
				}
				cur.text += strings.Repeat(" ", n)
			case e.Name.Space == textNS && e.Name.Local == "tab" && cur != nil:
				cur.text += "\t"
			}
		case xml.CharData:
			if inText {
				cur.text += string(e)
			}
		case xml.EndElement:
			if e.Name.Space == textNS && e.Name.Local == "p" {
				inText = false
			}
			if e.Name.Space == tableNS && e.Name.Local == "table-cell" && cur != nil && len(rows) > 0 {
				// Empty cells repeated to the sheet's end carry nothing.
				if cur.text != "" || cur.formula != "" {
					for range repeat {
						rows[len(rows)-1] = append(rows[len(rows)-1], *cur)
					}
				}
				cur = nil
			}
		}
	}
}
