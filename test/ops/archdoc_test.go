package ops

import (
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const architectureDoc = "../../docs/architecture.md"

// codeIndex is what the repository's Go files declare, to check the names
// a document cites against.
type codeIndex struct {
	pkgs    map[string]map[string]bool // package name -> its top-level names
	members map[string]bool            // "Type.member": methods and struct fields
	idents  map[string]bool            // every identifier used anywhere
	files   map[string]bool            // base names of the repository's files
	aliases map[string]string          // type alias -> the type it names
}

func indexCode(t *testing.T, root string) *codeIndex {
	t.Helper()
	ix := &codeIndex{pkgs: map[string]map[string]bool{}, members: map[string]bool{}, idents: map[string]bool{}, files: map[string]bool{}, aliases: map[string]string{}}
	fset := gotoken.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		ix.files[d.Name()] = true
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkg := strings.TrimSuffix(f.Name.Name, "_test")
		if ix.pkgs[pkg] == nil {
			ix.pkgs[pkg] = map[string]bool{}
		}
		top := ix.pkgs[pkg]
		ast.Inspect(f, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok {
				ix.idents[id.Name] = true
			}
			return true
		})
		for _, decl := range f.Decls {
			switch decl := decl.(type) {
			case *ast.FuncDecl:
				if decl.Recv == nil {
					top[decl.Name.Name] = true
					continue
				}
				ix.members[recvType(decl.Recv.List[0].Type)+"."+decl.Name.Name] = true
			case *ast.GenDecl:
				for _, spec := range decl.Specs {
					switch spec := spec.(type) {
					case *ast.TypeSpec:
						top[spec.Name.Name] = true
						if spec.Assign.IsValid() {
							ix.aliases[spec.Name.Name] = recvType(spec.Type)
						}
						if st, ok := spec.Type.(*ast.StructType); ok {
							for _, fld := range st.Fields.List {
								for _, name := range fld.Names {
									ix.members[spec.Name.Name+"."+name.Name] = true
								}
								if len(fld.Names) == 0 {
									ix.members[spec.Name.Name+"."+recvType(fld.Type)] = true
								}
							}
						}
						if it, ok := spec.Type.(*ast.InterfaceType); ok {
							for _, m := range it.Methods.List {
								for _, name := range m.Names {
									ix.members[spec.Name.Name+"."+name.Name] = true
								}
							}
						}
					case *ast.ValueSpec:
						for _, name := range spec.Names {
							top[name.Name] = true
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

// recvType is the name of a receiver's or embedded field's type.
func recvType(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvType(e.X)
	case *ast.IndexExpr:
		return recvType(e.X)
	case *ast.IndexListExpr:
		return recvType(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.Ident:
		return e.Name
	}
	return ""
}

var (
	codeSpan     = regexp.MustCompile("`([^`\n]+)`")
	qualified    = regexp.MustCompile(`^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(\(\))?$`)
	camelCase    = regexp.MustCompile(`^[a-z]+[A-Z]\w*$|^[A-Z][a-z0-9]+[A-Z]\w*$`)
	repoFilePath = regexp.MustCompile(`^[\w./-]+\.(go|md|mk|conf|yaml)$`)
	repoDirPath  = regexp.MustCompile(`^(cmd|proxy|topology|router|consistency|internal|config|telemetry|sim|bench|deploy|test|app|admin|etcdarbiter)(/[\w-]+)+$`)
)

// milvusCitations are the names of Milvus's own sources and protocol the
// document cites; they are not this repository's.
var milvusCitations = map[string]bool{
	"milvus.proto.milvus.MilvusService": true,
	"internal/proxy/task_search.go":     true,
	"task_query.go":                     true,
	"util.go":                           true,
	"PreExecute":                        true,
	"parseGuaranteeTsFromConsistency":   true,
	"parseGuaranteeTs":                  true,
}

// check reports why a name cited in a code span does not resolve, or "".
func (ix *codeIndex) check(name string) string {
	name = strings.TrimSuffix(name, "()")
	switch {
	case milvusCitations[name]:
		return ""
	case repoFilePath.MatchString(name):
		if strings.Contains(name, "/") {
			if _, err := os.Stat(filepath.Join(repoRoot, name)); err != nil {
				return "no such file"
			}
		} else if !ix.files[name] {
			return "no file of that name"
		}
		return ""
	case repoDirPath.MatchString(name):
		if st, err := os.Stat(filepath.Join(repoRoot, name)); err != nil || !st.IsDir() {
			return "no such directory"
		}
		return ""
	case strings.Contains(name, "_"):
		return "" // configuration keys, metric names
	case qualified.MatchString(name):
		parts := strings.Split(name, ".")
		if top, ok := ix.pkgs[parts[0]]; ok && parts[0] != "" {
			if !top[parts[1]] && !ix.members[parts[0]+"."+parts[1]] {
				return "package " + parts[0] + " declares no " + parts[1]
			}
			parts = parts[1:]
		}
		for i := 0; i+1 < len(parts); i++ {
			typ := parts[i]
			if a, ok := ix.aliases[typ]; ok {
				typ = a
			}
			if !ix.members[typ+"."+parts[i+1]] {
				return "no method or field " + parts[i] + "." + parts[i+1]
			}
		}
		return ""
	case camelCase.MatchString(name):
		if !ix.idents[name] {
			return "no identifier of that name"
		}
	}
	return ""
}

// TestArchitectureDocCitesCode: every function, type, field, file and
// directory docs/architecture.md names in a code span exists, so the
// newcomer's guide cannot silently point at code that was renamed or
// moved.
func TestArchitectureDocCitesCode(t *testing.T) {
	doc, err := os.ReadFile(architectureDoc)
	if err != nil {
		t.Fatal(err)
	}
	ix := indexCode(t, repoRoot)
	checked := 0
	for _, m := range codeSpan.FindAllStringSubmatch(string(doc), -1) {
		for _, name := range strings.FieldsFunc(m[1], func(r rune) bool { return strings.ContainsRune(" ,→|<>=+×:;", r) }) {
			checked++
			if why := ix.check(name); why != "" {
				t.Errorf("docs/architecture.md cites `%s` (in `%s`): %s", name, m[1], why)
			}
		}
	}
	if checked < 100 {
		t.Fatalf("only %d names checked: the parser lost the document", checked)
	}
}

// TestArchitectureDocCheckerFails: the checker above catches a renamed
// method, a missing package member, file and directory.
func TestArchitectureDocCheckerFails(t *testing.T) {
	ix := indexCode(t, repoRoot)
	for _, name := range []string{"Server.prepareRead", "topology.Manager.WaitWritable", "router.ReadPolicy.Plan", "proxy/relay", "proxy/fast.go", "chooseLeader"} {
		if why := ix.check(name); why != "" {
			t.Errorf("%s: %s, want it found", name, why)
		}
	}
	for _, name := range []string{"Server.prepareReadX", "topology.NoSuchThing", "router.ReadPolicy.Plan2", "proxy/nosuch", "proxy/nosuch.go", "nosuch.go", "chooseLeaderX"} {
		if ix.check(name) == "" {
			t.Errorf("%s: found, want it reported", name)
		}
	}
}

// TestArchitectureLayering: docs/architecture.md's package table lists
// every product package of the module, and each imports only packages in
// rows below its own (or in its own row), so the table's order is the
// layering a newcomer reads.
func TestArchitectureLayering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	doc, err := os.ReadFile(architectureDoc)
	if err != nil {
		t.Fatal(err)
	}
	row := map[string]int{} // package path relative to the module -> table row
	inTable := false
	n := 0
	for _, line := range strings.Split(string(doc), "\n") {
		switch {
		case strings.HasPrefix(line, "| package | its one job |"):
			inTable = true
			continue
		case !inTable || strings.HasPrefix(line, "|---"):
			continue
		case !strings.HasPrefix(line, "|"):
			inTable = false
			continue
		}
		n++
		first := strings.Split(line, "|")[1]
		for _, m := range codeSpan.FindAllStringSubmatch(first, -1) {
			if !strings.HasPrefix(m[1], "test/") {
				row[m[1]] = n
			}
		}
	}
	if len(row) < 10 {
		t.Fatalf("found %d packages in the table: the parser lost it", len(row))
	}
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, ok := strings.CutPrefix(f[0], module+"/")
		if !ok || strings.HasPrefix(pkg, "test/") || isTestHelper(pkg) {
			continue
		}
		r, listed := row[pkg]
		if !listed {
			t.Errorf("package %s is not in docs/architecture.md's package table", pkg)
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, module+"/")
			if !ok {
				continue
			}
			if dr, listed := row[dep]; !listed || dr < r {
				t.Errorf("%s (row %d) imports %s (row %d, 0: not in the table): the table's order is not the layering", pkg, r, dep, dr)
			}
		}
	}
}

// isTestHelper: the module's packages for tests only, by name.
func isTestHelper(pkg string) bool {
	base := path.Base(pkg)
	return strings.HasSuffix(base, "test") || strings.HasSuffix(base, "testutil")
}
