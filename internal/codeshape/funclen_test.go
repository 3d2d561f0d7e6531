package codeshape

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// maxLines is the longest a non-test function may be, from its func line
// to its closing brace.
const maxLines = 60

// pending are functions over maxLines that other branches are rewriting
// now; each goes once its branch lands.
var pending = map[string]bool{}

// TestFunctionLength: no non-test function in the module over maxLines.
func TestFunctionLength(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			n := fset.Position(fn.Body.End()).Line - fset.Position(fn.Pos()).Line + 1
			name := filepath.ToSlash(rel) + " " + fn.Name.Name
			switch {
			case n > maxLines && pending[name]:
				t.Logf("%s: %d lines (pending: its branch splits it)", name, n)
			case n > maxLines:
				t.Errorf("%s: %d lines; want at most %d", name, n, maxLines)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
