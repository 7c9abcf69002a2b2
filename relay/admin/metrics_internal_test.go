package admin

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// constantsOf returns the values of the string constants of type typ
// declared in the package in dir (its non-test files), sorted.
func constantsOf(t *testing.T, dir, typ string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != typ {
					continue
				}
				for _, v := range vs.Values {
					lit, ok := v.(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: a %s constant is not a string literal: the test cannot read it", fset.Position(v.Pos()), typ)
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, s)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func labelsOf[T ~string](values []T) []string {
	out := make([]string, 0, len(values))
	for _, v := range values {
		out = append(out, string(v))
	}
	slices.Sort(out)
	return out
}

// TestMetricsLabelEveryClass: each labelled metric registers, and so
// counts under its own name, every class its type declares, so a class
// added to the store or the front end cannot end up counted as "other".
func TestMetricsLabelEveryClass(t *testing.T) {
	for _, tc := range []struct {
		dir, typ string
		labels   []string
		// notLabels are constants of the type the metric never sees, and why.
		notLabels map[string]string
	}{
		{dir: "../../store", typ: "RejectClass", labels: labelsOf(rejectionClasses)},
		{dir: "../inbound", typ: "RefusalClass", labels: labelsOf(refusalClasses)},
		{dir: "../inbound", typ: "DKIMResult", labels: labelsOf(dkimResults)},
		{dir: "../../store", typ: "HeldReason", labels: labelsOf(heldReasons)},
		{dir: "../../store", typ: "DeliveryState", labels: labelsOf(deliveryStates),
			notLabels: map[string]string{"split": "only a part has it; the gauge counts recipients' whole copies"}},
	} {
		var want []string
		for _, c := range constantsOf(t, tc.dir, tc.typ) {
			if tc.notLabels[c] == "" {
				want = append(want, c)
			}
		}
		if len(want) == 0 {
			t.Errorf("no %s constants found in %s: the test would prove nothing", tc.typ, tc.dir)
		}
		if !slices.Equal(tc.labels, want) {
			t.Errorf("%s: metrics label %v, the type declares %v", tc.typ, tc.labels, want)
		}
	}
}
