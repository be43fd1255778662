package sim

import (
	"fmt"
	"strings"
	"testing"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
)

// exprFixture is a tiny collection: rows i=0..9 with age=i, name="n<i>",
// flag=i%2==0, score=i/2, meta {"k": i, "s": "v<i>", "arr": [i, i+1]}.
func exprFixture(t testing.TB) (*collData, *exprEnv) {
	t.Helper()
	fields, _, pk, dyn, err := buildFields("x", &schemapb.CollectionSchema{
		EnableDynamicField: true,
		Fields: []*schemapb.FieldSchema{
			{Name: "id", DataType: schemapb.DataType_Int64, IsPrimaryKey: true},
			{Name: "v", DataType: schemapb.DataType_FloatVector, TypeParams: []*commonpb.KeyValuePair{kv("dim", "2")}},
			{Name: "age", DataType: schemapb.DataType_Int32},
			{Name: "name", DataType: schemapb.DataType_VarChar, TypeParams: []*commonpb.KeyValuePair{kv("max_length", "10")}},
			{Name: "flag", DataType: schemapb.DataType_Bool},
			{Name: "score", DataType: schemapb.DataType_Float},
			{Name: "j", DataType: schemapb.DataType_JSON},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := newCollData(fields, pk)
	b := &batch{n: 10, cols: make([]*column, len(fields))}
	for i, f := range fields {
		b.cols[i] = newColumn(f)
	}
	for i := 0; i < 10; i++ {
		b.cols[0].i64 = append(b.cols[0].i64, int64(i))
		b.cols[1].vec = append(b.cols[1].vec, float32(i), 1)
		b.cols[1].inv = append(b.cols[1].inv, invNorm([]float32{float32(i), 1}))
		b.cols[2].i64 = append(b.cols[2].i64, int64(i))
		b.cols[3].s = append(b.cols[3].s, "n"+string(rune('0'+i)))
		b.cols[4].b = append(b.cols[4].b, i%2 == 0)
		b.cols[5].f32 = append(b.cols[5].f32, float32(i)/2)
		raw := []byte(fmt.Sprintf(`{"k":%d,"s":"v%d","arr":[%d,%d]}`, i, i, i, i+1))
		v, err := parseJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		b.cols[6].raw = append(b.cols[6].raw, raw)
		b.cols[6].js = append(b.cols[6].js, v)
		b.cols[7].raw = append(b.cols[7].raw, raw)
		b.cols[7].js = append(b.cols[7].js, v)
	}
	d.insert(b, 1)
	env := &exprEnv{fields: map[string]*fieldInfo{}, dyn: dyn}
	for _, f := range fields {
		env.fields[f.name] = f
	}
	return d, env
}

func evalRows(t *testing.T, d *collData, env *exprEnv, expr string) []int64 {
	t.Helper()
	f, err := compileFilter(expr, env)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	pred := f.bind(d)
	var out []int64
	for r := int32(0); r < int32(d.rows()); r++ {
		if pred(r) {
			out = append(out, int64(r))
		}
	}
	return out
}

func TestExprSemantics(t *testing.T) {
	d, env := exprFixture(t)
	cases := map[string]string{
		"age < 3":                              "[0 1 2]",
		"age < 3 or age > 7 and flag":          "[0 1 2 8]",
		"(age < 3 or age > 7) and flag":        "[0 2 8]",
		"not flag and age < 5":                 "[1 3]",
		"!flag && age < 5":                     "[1 3]",
		"not (age < 8)":                        "[8 9]",
		"not flag == true":                     "[1 3 5 7 9]", // not binds tighter: (not flag) == true
		"AGE_NOT_A_KEYWORD == 1 or age IN [4]": "[4]",
		"age not in [0, 1, 2, 3, 4, 5, 6]":     "[7 8 9]",
		"age NOT IN [9] and age >= 8":          "[8]",
		`name == "n4" or name == 'n5'`:         "[4 5]",
		`name like "n%" and age > 8`:           "[9]",
		`name like "_1"`:                       "[1]",
		"score >= 4":                           "[8 9]",
		"score == 1.5":                         "[3]",
		"2 < age <= 4":                         "[3 4]",
		`j["k"] > 7`:                           "[8 9]",
		`j["s"] == "v2"`:                       "[2]",
		`j["arr"][1] == 3`:                     "[2]",
		`j["nope"] == 1`:                       "[]",
		`k >= 8`:                               "[8 9]",
		`s in ["v1", "v3"]`:                    "[1 3]",
		`$meta["k"] == 0`:                      "[0]",
		`age == -1 or age > -1 and age < 1`:    "[0]",
		`flag == false and age > 6`:            "[7 9]",
		`age != 3 and age < 5`:                 "[0 1 2 4]",
		`name in []`:                           "[]",
		`j["k"] in [1, 2.0]`:                   "[1 2]",
		`name == "with \"quote\""`:             "[]",
		`1 == age`:                             "[1]",
		`age <= score`:                         "[0]",
	}
	for expr, want := range cases {
		if got := fmt.Sprint(evalRows(t, d, env, expr)); got != want {
			t.Errorf("%s: got %s, want %s", expr, got, want)
		}
	}
}

func TestExprErrors(t *testing.T) {
	_, env := exprFixture(t)
	env.dyn = nil // unknown identifiers are errors without a dynamic field
	cases := map[string]string{
		"":                           "unexpected end of expression",
		"age >":                      "unexpected end of expression",
		"age > 1 and":                "unexpected end of expression",
		"(age > 1":                   "expected ')'",
		"age = 1":                    "use == for equality",
		"age > 1 )":                  `unexpected ")"`,
		`name == "abc`:               "unterminated string",
		"nosuch == 1":                "field nosuch not exist",
		`age == "x"`:                 "comparisons between Int64 and VarChar are not supported",
		`name > 3`:                   "comparisons between VarChar and Int64 are not supported",
		"flag < true":                "not supported between Bool",
		"age":                        "must be boolean",
		"age + 1 == 2":               "arithmetic operator",
		"age in 3":                   "must be a list",
		"age in [1, age]":            "list elements must be constants",
		`age like "x%"`:              "like applies to VarChar",
		"v == 1":                     "vector field v cannot be used",
		"1 == 1":                     "needs at least one field",
		"age & 1":                    "bitwise operator",
		"{missing} == age":           "was not provided",
		"not age":                    "not applies to a boolean expression",
		"age > 1 or name":            "and/or apply to boolean expressions",
		"1 < age == 3":               "cannot chain",
		"age[0] == 1":                "cannot be indexed",
		"age > 99999999999999999999": "bad integer",
		"age @ 1":                    "unexpected character",
	}
	for expr, want := range cases {
		_, err := compileFilter(expr, env)
		if err == nil {
			t.Errorf("%q: no error, want %q", expr, want)
			continue
		}
		me, ok := err.(*milvusError)
		if !ok || me.code != codeParameterInvalid {
			t.Errorf("%q: want a Milvus parameter error, got %T %v", expr, err, err)
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "cannot parse expression") {
			t.Errorf("%q: error %q does not mention %q", expr, err, want)
		}
	}
}

func TestExprPrimaryKeyDetection(t *testing.T) {
	_, env := exprFixture(t)
	for expr, want := range map[string]int{"id in [1, 2, 3]": 3, "id == 7": 1, "7 == id": 1, "id in [1] and age > 0": -1, "id > 3": -1, "id not in [1]": -1} {
		f, err := compileFilter(expr, env)
		if err != nil {
			t.Fatal(err)
		}
		if want < 0 && f.isPK || want >= 0 && (!f.isPK || len(f.pkOnly) != want) {
			t.Errorf("%q: isPK %v keys %v", expr, f.isPK, f.pkOnly)
		}
	}
}

// FuzzCompileFilter: no input may panic the parser or the evaluator.
func FuzzCompileFilter(f *testing.F) {
	for _, s := range []string{"age < 3", `name like "a%" or not flag`, `j["k"][0] in [1, "x", true]`, "((", "age >= -", `"`, "{x}", "1<age<2<3", "\\u", `name == "\u12"`, "not not not flag", "[1,2] in age"} {
		f.Add(s)
	}
	d, env := exprFixture(f)
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := compileFilter(expr, env)
		if err != nil {
			return
		}
		pred := flt.bind(d)
		for r := int32(0); r < int32(d.rows()); r++ {
			pred(r)
		}
	})
}

// TestLexTokens pins the tokenizer: every kind, with its text and byte
// position, keywords in any case, and exponents with a sign.
func TestLexTokens(t *testing.T) {
	src := `(a>=1.5e-3 && b_2 in [-2, {x}]) || NOT $meta["k"] != 'v' and c<.5 OR d>7 AnD e==true, false Like !`
	toks, err := lex(src)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		k    tokKind
		text string
	}{
		{tkLParen, "("}, {tkIdent, "a"}, {tkCmp, ">="}, {tkFloat, "1.5e-3"}, {tkAnd, "&&"}, {tkIdent, "b_2"}, {tkIn, "in"},
		{tkLBrack, "["}, {tkMinus, "-"}, {tkInt, "2"}, {tkComma, ","}, {tkTemplate, "x"}, {tkRBrack, "]"}, {tkRParen, ")"},
		{tkOr, "||"}, {tkNot, "NOT"}, {tkIdent, "$meta"}, {tkLBrack, "["}, {tkString, "k"}, {tkRBrack, "]"}, {tkCmp, "!="},
		{tkString, "v"}, {tkAnd, "and"}, {tkIdent, "c"}, {tkCmp, "<"}, {tkFloat, ".5"}, {tkOr, "OR"},
		{tkIdent, "d"}, {tkCmp, ">"}, {tkInt, "7"}, {tkAnd, "AnD"}, {tkIdent, "e"}, {tkCmp, "=="}, {tkTrue, "true"},
		{tkComma, ","}, {tkFalse, "false"}, {tkLike, "Like"}, {tkNot, "!"}, {tkEOF, ""},
	}
	if len(toks) != len(want) {
		t.Fatalf("got %d tokens %+v, want %d", len(toks), toks, len(want))
	}
	for i, w := range want {
		tk := toks[i]
		if tk.kind != w.k || tk.text != w.text {
			t.Errorf("token %d: got kind %d %q, want kind %d %q", i, tk.kind, tk.text, w.k, w.text)
		}
		// Strings and templates are decoded; the others are src verbatim.
		lit := tk.text
		switch tk.kind {
		case tkString, tkTemplate:
			lit = src[tk.pos : tk.pos+1]
			if lit != "'" && lit != `"` && lit != "{" {
				t.Errorf("token %d %q: position %d points at %q", i, tk.text, tk.pos, src[tk.pos:])
			}
		case tkEOF:
			if tk.pos != len(src) {
				t.Errorf("end of expression at %d, want %d", tk.pos, len(src))
			}
		default:
			if !strings.HasPrefix(src[tk.pos:], lit) {
				t.Errorf("token %d %q: position %d points at %q", i, tk.text, tk.pos, src[tk.pos:])
			}
		}
	}
}
