package sim

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/milvus-io/milvus-proto/go-api/v2/schemapb"
)

// This file is a small real parser and evaluator for Milvus boolean filter
// expressions: ==, !=, <, <=, >, >=, chained ranges (1 < a < 5), in / not in
// lists, like, and / && , or / ||, not / !, parentheses, int, float, bool and
// varchar fields, JSON field access (j["k"]["k2"], j["arr"][0]), dynamic
// fields, and {name} template values. Precedence, tightest first: not,
// comparisons (in, like), and, or.

type tokKind int

const (
	tkEOF tokKind = iota
	tkIdent
	tkInt
	tkFloat
	tkString
	tkTemplate
	tkCmp // == != < <= > >=
	tkLParen
	tkRParen
	tkLBrack
	tkRBrack
	tkComma
	tkMinus
	tkAnd
	tkOr
	tkNot
	tkIn
	tkLike
	tkTrue
	tkFalse
)

type token struct {
	kind tokKind
	text string // identifier, operator, literal text or decoded string
	pos  int
}

func (t token) describe() string {
	switch t.kind {
	case tkEOF:
		return "end of expression"
	case tkString:
		return strconv.Quote(t.text)
	}
	return fmt.Sprintf("%q", t.text)
}

// lex splits a filter expression into tokens, ending with tkEOF.
func lex(src string) ([]token, error) {
	var toks []token
	for i := 0; i < len(src); {
		switch src[i] {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		tok, n, err := lexToken(src, i)
		if err != nil {
			return nil, err
		}
		toks = append(toks, tok)
		i += n
	}
	return append(toks, token{tkEOF, "", len(src)}), nil
}

// lexToken reads the token that starts at src[i] (not a space) and returns
// it with its length in bytes.
func lexToken(src string, i int) (token, int, error) {
	c := src[i]
	if k, ok := punctuation(c); ok {
		return token{k, src[i : i+1], i}, 1, nil
	}
	switch {
	case c == '=' || c == '!' || c == '<' || c == '>':
		return lexComparison(src, i)
	case c == '&' || c == '|':
		if i+1 < len(src) && src[i+1] == c {
			k := tkAnd
			if c == '|' {
				k = tkOr
			}
			return token{k, src[i : i+2], i}, 2, nil
		}
		return token{}, 0, fmt.Errorf("bitwise operator %q at position %d is not supported", string(c), i)
	case c == '"' || c == '\'':
		s, n, err := lexString(src[i:])
		if err != nil {
			return token{}, 0, fmt.Errorf("%v at position %d", err, i)
		}
		return token{tkString, s, i}, n, nil
	case c == '{':
		return lexTemplate(src, i)
	case c >= '0' && c <= '9' || c == '.' && i+1 < len(src) && src[i+1] >= '0' && src[i+1] <= '9':
		return lexNumber(src, i)
	case isIdentByte(c, false):
		t := lexWord(src, i)
		return t, len(t.text), nil
	}
	r, _ := utf8.DecodeRuneInString(src[i:])
	switch r {
	case '+', '*', '/', '%', '^', '~':
		return token{}, 0, fmt.Errorf("arithmetic operator %q at position %d is not supported", string(r), i)
	}
	return token{}, 0, fmt.Errorf("unexpected character %q at position %d", string(r), i)
}

// punctuation is the kind of the one-byte tokens.
func punctuation(c byte) (tokKind, bool) {
	switch c {
	case '(':
		return tkLParen, true
	case ')':
		return tkRParen, true
	case '[':
		return tkLBrack, true
	case ']':
		return tkRBrack, true
	case ',':
		return tkComma, true
	case '-':
		return tkMinus, true
	}
	return 0, false
}

// lexComparison reads a comparison (== != < <= > >=) or a '!' (not).
func lexComparison(src string, i int) (token, int, error) {
	c := src[i]
	two := ""
	if i+1 < len(src) {
		two = src[i : i+2]
	}
	switch {
	case two == "==" || two == "!=" || two == "<=" || two == ">=":
		return token{tkCmp, two, i}, 2, nil
	case c == '<' || c == '>':
		return token{tkCmp, string(c), i}, 1, nil
	case c == '!':
		return token{tkNot, "!", i}, 1, nil
	}
	return token{}, 0, fmt.Errorf("unexpected '=' at position %d (use == for equality)", i)
}

// lexTemplate reads a {name} template placeholder.
func lexTemplate(src string, i int) (token, int, error) {
	end := strings.IndexByte(src[i:], '}')
	if end < 0 {
		return token{}, 0, fmt.Errorf("unterminated template placeholder at position %d", i)
	}
	name := strings.TrimSpace(src[i+1 : i+end])
	if !isIdent(name) {
		return token{}, 0, fmt.Errorf("bad template placeholder %q at position %d", src[i:i+end+1], i)
	}
	return token{tkTemplate, name, i}, end + 1, nil
}

// lexNumber reads an integer or a float (with a fraction or an exponent).
func lexNumber(src string, i int) (token, int, error) {
	j := i
	isFloat := false
	for j < len(src) && (src[j] >= '0' && src[j] <= '9' || src[j] == '.' || src[j] == 'e' || src[j] == 'E' ||
		(src[j] == '+' || src[j] == '-') && j > i && (src[j-1] == 'e' || src[j-1] == 'E')) {
		if src[j] == '.' || src[j] == 'e' || src[j] == 'E' {
			isFloat = true
		}
		j++
	}
	text := src[i:j]
	if isFloat {
		if _, err := strconv.ParseFloat(text, 64); err != nil {
			return token{}, 0, fmt.Errorf("bad number %q at position %d", text, i)
		}
		return token{tkFloat, text, i}, j - i, nil
	}
	if _, err := strconv.ParseInt(text, 10, 64); err != nil {
		return token{}, 0, fmt.Errorf("bad integer %q at position %d", text, i)
	}
	return token{tkInt, text, i}, j - i, nil
}

// isIdentByte: identifiers are ASCII letters, digits (not first), '_' and
// '$'.
func isIdentByte(c byte, notFirst bool) bool {
	return c == '_' || c == '$' || c < utf8.RuneSelf && (unicode.IsLetter(rune(c)) || notFirst && unicode.IsDigit(rune(c)))
}

// lexWord reads an identifier or a keyword (case-insensitive).
func lexWord(src string, i int) token {
	j := i
	for j < len(src) && isIdentByte(src[j], true) {
		j++
	}
	word := src[i:j]
	k := tkIdent
	switch strings.ToLower(word) {
	case "and":
		k = tkAnd
	case "or":
		k = tkOr
	case "not":
		k = tkNot
	case "in":
		k = tkIn
	case "like":
		k = tkLike
	case "true":
		k = tkTrue
	case "false":
		k = tkFalse
	}
	return token{k, word, i}
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || unicode.IsLetter(r) || i > 0 && unicode.IsDigit(r)) {
			return false
		}
	}
	return true
}

func lexString(s string) (string, int, error) {
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q:
			return b.String(), i + 1, nil
		case c == '\\':
			if i+1 >= len(s) {
				return "", 0, fmt.Errorf("unterminated string")
			}
			i++
			switch s[i] {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '\\', '"', '\'':
				b.WriteByte(s[i])
			case 'u':
				if i+4 >= len(s) {
					return "", 0, fmt.Errorf("bad \\u escape")
				}
				v, err := strconv.ParseUint(s[i+1:i+5], 16, 32)
				if err != nil {
					return "", 0, fmt.Errorf("bad \\u escape")
				}
				b.WriteRune(rune(v))
				i += 4
			default:
				b.WriteByte('\\')
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, fmt.Errorf("unterminated string")
}

// AST

type vtype int

const (
	tyBool vtype = iota
	tyInt
	tyFloat
	tyString
	tyJSON // unknown until evaluated (JSON and dynamic fields)
	tyList
)

func (t vtype) String() string {
	return [...]string{"Bool", "Int64", "Double", "VarChar", "JSON", "Array"}[t]
}

type node interface{ typ() vtype }

type litNode struct{ v value }
type fieldNode struct {
	f    *fieldInfo
	path []any // string keys / int indexes into JSON
}
type listNode struct{ items []value }
type notNode struct{ x node }
type logicNode struct {
	and  bool
	l, r node
}
type cmpNode struct {
	op   string
	l, r node
}
type inNode struct {
	x     node
	items []value
	neg   bool
}
type likeNode struct {
	x  node
	re *regexp.Regexp
}

func (n *litNode) typ() vtype { return n.v.vtype() }
func (n *fieldNode) typ() vtype {
	if len(n.path) > 0 || n.f.typ == schemapb.DataType_JSON {
		return tyJSON
	}
	switch n.f.typ {
	case schemapb.DataType_Bool:
		return tyBool
	case schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32, schemapb.DataType_Int64:
		return tyInt
	case schemapb.DataType_Float, schemapb.DataType_Double:
		return tyFloat
	case schemapb.DataType_VarChar, schemapb.DataType_String:
		return tyString
	}
	return tyJSON
}
func (n *listNode) typ() vtype  { return tyList }
func (n *notNode) typ() vtype   { return tyBool }
func (n *logicNode) typ() vtype { return tyBool }
func (n *cmpNode) typ() vtype   { return tyBool }
func (n *inNode) typ() vtype    { return tyBool }
func (n *likeNode) typ() vtype  { return tyBool }

// value is an evaluated operand.
type vkind uint8

const (
	vNull vkind = iota
	vBool
	vInt
	vFloat
	vStr
	vList
	vOther // JSON object
)

type value struct {
	k vkind
	b bool
	i int64
	f float64
	s string
	l []value
}

func (v value) vtype() vtype {
	switch v.k {
	case vBool:
		return tyBool
	case vInt:
		return tyInt
	case vFloat:
		return tyFloat
	case vStr:
		return tyString
	case vList:
		return tyList
	}
	return tyJSON
}

func (v value) num() (float64, bool) {
	switch v.k {
	case vInt:
		return float64(v.i), true
	case vFloat:
		return v.f, true
	}
	return 0, false
}

func (v value) String() string {
	switch v.k {
	case vBool:
		return strconv.FormatBool(v.b)
	case vInt:
		return strconv.FormatInt(v.i, 10)
	case vFloat:
		return strconv.FormatFloat(v.f, 'g', -1, 64)
	case vStr:
		return strconv.Quote(v.s)
	case vList:
		parts := make([]string, len(v.l))
		for i, x := range v.l {
			parts[i] = x.String()
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	return "null"
}

func jsonValue(x any) value {
	switch t := x.(type) {
	case nil:
		return value{}
	case bool:
		return value{k: vBool, b: t}
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return value{k: vInt, i: i}
		}
		f, _ := t.Float64()
		return value{k: vFloat, f: f}
	case float64:
		if t == math.Trunc(t) && math.Abs(t) < 1<<53 {
			return value{k: vInt, i: int64(t)}
		}
		return value{k: vFloat, f: t}
	case string:
		return value{k: vStr, s: t}
	case []any:
		l := make([]value, len(t))
		for i, e := range t {
			l[i] = jsonValue(e)
		}
		return value{k: vList, l: l}
	}
	return value{k: vOther}
}

// parser

type parser struct {
	toks []token
	pos  int
	env  *exprEnv
}

// exprEnv is what an expression is checked against.
type exprEnv struct {
	fields map[string]*fieldInfo
	dyn    *fieldInfo
	tmpl   map[string]*schemapb.TemplateValue
}

func (p *parser) peek() token { return p.toks[p.pos] }
func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tkEOF {
		p.pos++
	}
	return t
}

func (p *parser) expect(k tokKind, what string) (token, error) {
	t := p.next()
	if t.kind != k {
		return t, fmt.Errorf("expected %s at position %d, got %s", what, t.pos, t.describe())
	}
	return t, nil
}

func (p *parser) parseOr() (node, error)  { return p.parseLogic(tkOr, false, p.parseAnd) }
func (p *parser) parseAnd() (node, error) { return p.parseLogic(tkAnd, true, p.parseCmp) }

// parseLogic parses operand {op operand}, grouping to the left.
func (p *parser) parseLogic(op tokKind, and bool, operand func() (node, error)) (node, error) {
	l, err := operand()
	if err != nil {
		return nil, err
	}
	for p.peek().kind == op {
		p.next()
		r, err := operand()
		if err != nil {
			return nil, err
		}
		l = &logicNode{and: and, l: l, r: r}
	}
	return l, nil
}

func isRangeOp(op string) bool { return op == "<" || op == "<=" || op == ">" || op == ">=" }

func (p *parser) parseCmp() (node, error) {
	l, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	switch t := p.peek(); t.kind {
	case tkCmp:
		p.next()
		r, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		first := &cmpNode{op: t.text, l: l, r: r}
		if t2 := p.peek(); t2.kind == tkCmp {
			if !isRangeOp(t.text) || !isRangeOp(t2.text) {
				return nil, fmt.Errorf("cannot chain %q and %q at position %d", t.text, t2.text, t2.pos)
			}
			p.next()
			r2, err := p.parseUnary()
			if err != nil {
				return nil, err
			}
			return &logicNode{and: true, l: first, r: &cmpNode{op: t2.text, l: r, r: r2}}, nil
		}
		return first, nil
	case tkIn:
		p.next()
		return p.parseIn(l, false)
	case tkNot:
		if p.toks[p.pos+1].kind == tkIn {
			p.next()
			p.next()
			return p.parseIn(l, true)
		}
	case tkLike:
		p.next()
		s, err := p.expect(tkString, "a string pattern after like")
		if err != nil {
			return nil, err
		}
		return &likeNode{x: l, re: likePattern(s.text)}, nil
	}
	return l, nil
}

func (p *parser) parseIn(x node, neg bool) (node, error) {
	t := p.peek()
	r, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	var items []value
	switch n := r.(type) {
	case *listNode:
		items = n.items
	case *litNode:
		if n.v.k != vList {
			return nil, fmt.Errorf("the right side of in must be a list, got %s at position %d", n.v, t.pos)
		}
		items = n.v.l
	default:
		return nil, fmt.Errorf("the right side of in must be a list of constants (position %d)", t.pos)
	}
	return &inNode{x: x, items: items, neg: neg}, nil
}

func likePattern(pat string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range pat {
		switch r {
		case '%':
			b.WriteString(".*")
		case '_':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func (p *parser) parseUnary() (node, error) {
	switch t := p.peek(); t.kind {
	case tkNot:
		p.next()
		x, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return &notNode{x: x}, nil
	case tkMinus:
		p.next()
		x, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		lit, ok := x.(*litNode)
		if !ok || (lit.v.k != vInt && lit.v.k != vFloat) {
			return nil, fmt.Errorf("unary minus at position %d applies only to numbers (arithmetic is not supported)", t.pos)
		}
		v := lit.v
		v.i, v.f = -v.i, -v.f
		return &litNode{v: v}, nil
	}
	return p.parsePrimary()
}

func (p *parser) parsePrimary() (node, error) {
	t := p.next()
	switch t.kind {
	case tkLParen:
		x, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if _, err := p.expect(tkRParen, "')'"); err != nil {
			return nil, err
		}
		return x, nil
	case tkLBrack:
		var items []value
		if p.peek().kind == tkRBrack {
			p.next()
			return &listNode{}, nil
		}
		for {
			x, err := p.parseUnary()
			if err != nil {
				return nil, err
			}
			lit, ok := x.(*litNode)
			if !ok {
				return nil, fmt.Errorf("list elements must be constants (position %d)", t.pos)
			}
			items = append(items, lit.v)
			sep := p.next()
			if sep.kind == tkRBrack {
				return &listNode{items: items}, nil
			}
			if sep.kind != tkComma {
				return nil, fmt.Errorf("expected ',' or ']' at position %d, got %s", sep.pos, sep.describe())
			}
		}
	case tkInt:
		i, _ := strconv.ParseInt(t.text, 10, 64)
		return &litNode{v: value{k: vInt, i: i, f: float64(i)}}, nil
	case tkFloat:
		f, _ := strconv.ParseFloat(t.text, 64)
		return &litNode{v: value{k: vFloat, f: f}}, nil
	case tkString:
		return &litNode{v: value{k: vStr, s: t.text}}, nil
	case tkTrue, tkFalse:
		return &litNode{v: value{k: vBool, b: t.kind == tkTrue}}, nil
	case tkTemplate:
		tv, ok := p.env.tmpl[t.text]
		if !ok {
			return nil, fmt.Errorf("the value of template placeholder {%s} was not provided", t.text)
		}
		v, err := templateValue(tv)
		if err != nil {
			return nil, fmt.Errorf("template placeholder {%s}: %v", t.text, err)
		}
		return &litNode{v: v}, nil
	case tkIdent:
		return p.parseField(t)
	}
	return nil, fmt.Errorf("unexpected %s at position %d", t.describe(), t.pos)
}

func (p *parser) parseField(t token) (node, error) {
	n := &fieldNode{}
	if f, ok := p.env.fields[t.text]; ok && !f.dynamic {
		n.f = f
	} else if t.text == dynamicFieldName && p.env.dyn != nil {
		n.f = p.env.dyn
	} else if p.env.dyn != nil {
		n.f = p.env.dyn
		n.path = []any{t.text}
	} else {
		return nil, fmt.Errorf("field %s not exist", t.text)
	}
	for p.peek().kind == tkLBrack {
		if n.f.typ != schemapb.DataType_JSON {
			return nil, fmt.Errorf("field %s of type %s cannot be indexed with [] (position %d)", n.f.name, n.f.typ, p.peek().pos)
		}
		p.next()
		k := p.next()
		switch k.kind {
		case tkString:
			n.path = append(n.path, k.text)
		case tkInt:
			i, _ := strconv.Atoi(k.text)
			n.path = append(n.path, i)
		default:
			return nil, fmt.Errorf("expected a string key or an index at position %d, got %s", k.pos, k.describe())
		}
		if _, err := p.expect(tkRBrack, "']'"); err != nil {
			return nil, err
		}
	}
	if n.f.isVector() {
		return nil, fmt.Errorf("vector field %s cannot be used in a filter expression", n.f.name)
	}
	return n, nil
}

func templateValue(tv *schemapb.TemplateValue) (value, error) {
	switch x := tv.GetVal().(type) {
	case *schemapb.TemplateValue_BoolVal:
		return value{k: vBool, b: x.BoolVal}, nil
	case *schemapb.TemplateValue_Int64Val:
		return value{k: vInt, i: x.Int64Val, f: float64(x.Int64Val)}, nil
	case *schemapb.TemplateValue_FloatVal:
		return value{k: vFloat, f: x.FloatVal}, nil
	case *schemapb.TemplateValue_StringVal:
		return value{k: vStr, s: x.StringVal}, nil
	case *schemapb.TemplateValue_ArrayVal:
		var l []value
		a := x.ArrayVal
		switch {
		case a.GetLongData() != nil:
			for _, v := range a.GetLongData().GetData() {
				l = append(l, value{k: vInt, i: v, f: float64(v)})
			}
		case a.GetDoubleData() != nil:
			for _, v := range a.GetDoubleData().GetData() {
				l = append(l, value{k: vFloat, f: v})
			}
		case a.GetBoolData() != nil:
			for _, v := range a.GetBoolData().GetData() {
				l = append(l, value{k: vBool, b: v})
			}
		case a.GetStringData() != nil:
			for _, v := range a.GetStringData().GetData() {
				l = append(l, value{k: vStr, s: v})
			}
		default:
			return value{}, fmt.Errorf("unsupported template array")
		}
		return value{k: vList, l: l}, nil
	}
	return value{}, fmt.Errorf("unsupported template value")
}

// type checking

func comparable(a, b vtype, op string) error {
	if a == tyJSON || b == tyJSON {
		return nil
	}
	num := func(t vtype) bool { return t == tyInt || t == tyFloat }
	switch {
	case num(a) && num(b), a == tyString && b == tyString:
		return nil
	case a == tyBool && b == tyBool:
		if op == "==" || op == "!=" {
			return nil
		}
		return fmt.Errorf("operator %s is not supported between Bool values", op)
	}
	return fmt.Errorf("comparisons between %s and %s are not supported", a, b)
}

func check(n node) error {
	switch x := n.(type) {
	case *notNode:
		if err := check(x.x); err != nil {
			return err
		}
		if t := x.x.typ(); t != tyBool && t != tyJSON {
			return fmt.Errorf("not applies to a boolean expression, got %s", t)
		}
	case *logicNode:
		for _, s := range []node{x.l, x.r} {
			if err := check(s); err != nil {
				return err
			}
			if t := s.typ(); t != tyBool && t != tyJSON {
				return fmt.Errorf("and/or apply to boolean expressions, got %s", t)
			}
		}
	case *cmpNode:
		if err := check(x.l); err != nil {
			return err
		}
		if err := check(x.r); err != nil {
			return err
		}
		_, ll := x.l.(*litNode)
		_, rl := x.r.(*litNode)
		if ll && rl {
			return fmt.Errorf("a comparison needs at least one field, got %v %s %v", describeNode(x.l), x.op, describeNode(x.r))
		}
		return comparable(x.l.typ(), x.r.typ(), x.op)
	case *inNode:
		if _, ok := x.x.(*fieldNode); !ok {
			return fmt.Errorf("the left side of in must be a field")
		}
		t := x.x.typ()
		for _, it := range x.items {
			if err := comparable(t, it.vtype(), "=="); err != nil {
				return fmt.Errorf("in list: %v", err)
			}
		}
	case *likeNode:
		if _, ok := x.x.(*fieldNode); !ok {
			return fmt.Errorf("the left side of like must be a field")
		}
		if t := x.x.typ(); t != tyString && t != tyJSON {
			return fmt.Errorf("like applies to VarChar fields, got %s", t)
		}
	case *listNode:
		return fmt.Errorf("a list is only allowed on the right side of in")
	}
	return nil
}

func describeNode(n node) string {
	switch x := n.(type) {
	case *litNode:
		return x.v.String()
	case *fieldNode:
		return x.f.name
	}
	return "expression"
}

// filter is a compiled boolean expression.
type filter struct {
	root node
	// pkOnly lists the primary keys when the expression is exactly
	// `pk == v` or `pk in [...]`; Milvus then deletes by those keys directly.
	pkOnly []pkValue
	isPK   bool
}

// compileFilter parses and checks expr. Errors are Milvus parameter errors.
func compileFilter(expr string, env *exprEnv) (*filter, error) {
	toks, err := lex(expr)
	if err == nil {
		p := &parser{toks: toks, env: env}
		var root node
		root, err = p.parseOr()
		if err == nil && p.peek().kind != tkEOF {
			t := p.peek()
			err = fmt.Errorf("unexpected %s at position %d", t.describe(), t.pos)
		}
		if err == nil {
			err = check(root)
		}
		if err == nil {
			if t := root.typ(); t != tyBool && t != tyJSON {
				err = fmt.Errorf("the expression must be boolean, got %s", t)
			}
		}
		if err == nil {
			f := &filter{root: root}
			f.detectPK()
			return f, nil
		}
	}
	return nil, errParam("failed to create query plan: cannot parse expression: %s, error: %v", expr, err)
}

func (f *filter) detectPK() {
	toPK := func(fn *fieldNode, vs []value) bool {
		if !fn.f.pk || len(fn.path) > 0 {
			return false
		}
		for _, v := range vs {
			switch {
			case v.k == vInt && fn.f.typ == schemapb.DataType_Int64:
				f.pkOnly = append(f.pkOnly, pkValue{i: v.i})
			case v.k == vStr && fn.f.typ != schemapb.DataType_Int64:
				f.pkOnly = append(f.pkOnly, pkValue{isStr: true, s: v.s})
			default:
				f.pkOnly = nil
				return false
			}
		}
		return true
	}
	switch x := f.root.(type) {
	case *inNode:
		if fn, ok := x.x.(*fieldNode); ok && !x.neg {
			f.isPK = toPK(fn, x.items)
		}
	case *cmpNode:
		if x.op != "==" {
			return
		}
		fn, ok := x.l.(*fieldNode)
		lit, ok2 := x.r.(*litNode)
		if !ok || !ok2 {
			fn, ok = x.r.(*fieldNode)
			lit, ok2 = x.l.(*litNode)
		}
		if ok && ok2 {
			f.isPK = toPK(fn, []value{lit.v})
		}
	}
}

// bind returns the predicate over rows of d. The caller holds d.mu for reading
// while using it.
func (f *filter) bind(d *collData) func(row int32) bool {
	ev := compileNode(f.root, d)
	return func(row int32) bool {
		v := ev(row)
		return v.k == vBool && v.b
	}
}

type evalFn func(row int32) value

func compileNode(n node, d *collData) evalFn {
	switch x := n.(type) {
	case *litNode:
		v := x.v
		return func(int32) value { return v }
	case *fieldNode:
		return compileField(x, d)
	case *notNode:
		inner := compileNode(x.x, d)
		return func(r int32) value {
			v := inner(r)
			if v.k != vBool {
				return value{k: vBool, b: false}
			}
			return value{k: vBool, b: !v.b}
		}
	case *logicNode:
		l, r := compileNode(x.l, d), compileNode(x.r, d)
		if x.and {
			return func(row int32) value {
				a := l(row)
				if a.k != vBool || !a.b {
					return value{k: vBool}
				}
				b := r(row)
				return value{k: vBool, b: b.k == vBool && b.b}
			}
		}
		return func(row int32) value {
			a := l(row)
			if a.k == vBool && a.b {
				return a
			}
			b := r(row)
			return value{k: vBool, b: b.k == vBool && b.b}
		}
	case *cmpNode:
		if fast := fastCmp(x, d); fast != nil {
			return fast
		}
		l, r := compileNode(x.l, d), compileNode(x.r, d)
		op := x.op
		return func(row int32) value { return value{k: vBool, b: compare(l(row), r(row), op)} }
	case *inNode:
		return compileIn(x, d)
	case *likeNode:
		inner := compileNode(x.x, d)
		re := x.re
		return func(row int32) value {
			v := inner(row)
			return value{k: vBool, b: v.k == vStr && re.MatchString(v.s)}
		}
	}
	return func(int32) value { return value{} }
}

func compileField(x *fieldNode, d *collData) evalFn {
	c := d.cols[x.f.pos]
	switch x.f.typ {
	case schemapb.DataType_Bool:
		return func(r int32) value { return value{k: vBool, b: c.b[r]} }
	case schemapb.DataType_Int8, schemapb.DataType_Int16, schemapb.DataType_Int32, schemapb.DataType_Int64:
		return func(r int32) value { return value{k: vInt, i: c.i64[r]} }
	case schemapb.DataType_Float:
		return func(r int32) value { return value{k: vFloat, f: float64(c.f32[r])} }
	case schemapb.DataType_Double:
		return func(r int32) value { return value{k: vFloat, f: c.f64[r]} }
	case schemapb.DataType_VarChar, schemapb.DataType_String:
		return func(r int32) value { return value{k: vStr, s: c.s[r]} }
	case schemapb.DataType_JSON:
		path := x.path
		return func(r int32) value {
			cur := c.js[r]
			for _, step := range path {
				switch k := step.(type) {
				case string:
					m, ok := cur.(map[string]any)
					if !ok {
						return value{}
					}
					cur, ok = m[k]
					if !ok {
						return value{}
					}
				case int:
					a, ok := cur.([]any)
					if !ok || k < 0 || k >= len(a) {
						return value{}
					}
					cur = a[k]
				}
			}
			return jsonValue(cur)
		}
	}
	return func(int32) value { return value{} }
}

// fastCmp specialises `field op literal` on typed columns, the common filter
// shape, to avoid building values per row.
func fastCmp(x *cmpNode, d *collData) evalFn {
	fn, ok := x.l.(*fieldNode)
	lit, ok2 := x.r.(*litNode)
	op := x.op
	if !ok || !ok2 {
		fn, ok = x.r.(*fieldNode)
		lit, ok2 = x.l.(*litNode)
		op = flipOp(op)
	}
	if !ok || !ok2 || len(fn.path) > 0 {
		return nil
	}
	c := d.cols[fn.f.pos]
	switch fn.typ() {
	case tyInt:
		if lit.v.k == vInt {
			k := lit.v.i
			cmp := intCmp(op)
			return func(r int32) value { return value{k: vBool, b: cmp(c.i64[r], k)} }
		}
	case tyString:
		if lit.v.k == vStr {
			k := lit.v.s
			switch op {
			case "==":
				return func(r int32) value { return value{k: vBool, b: c.s[r] == k} }
			case "!=":
				return func(r int32) value { return value{k: vBool, b: c.s[r] != k} }
			}
		}
	}
	return nil
}

func flipOp(op string) string {
	switch op {
	case "<":
		return ">"
	case "<=":
		return ">="
	case ">":
		return "<"
	case ">=":
		return "<="
	}
	return op
}

func intCmp(op string) func(a, b int64) bool {
	switch op {
	case "==":
		return func(a, b int64) bool { return a == b }
	case "!=":
		return func(a, b int64) bool { return a != b }
	case "<":
		return func(a, b int64) bool { return a < b }
	case "<=":
		return func(a, b int64) bool { return a <= b }
	case ">":
		return func(a, b int64) bool { return a > b }
	default:
		return func(a, b int64) bool { return a >= b }
	}
}

// compare applies op; values of types that cannot be compared (a JSON value of
// another type, a missing key) make every comparison false except !=.
func compare(a, b value, op string) bool {
	var c int
	switch {
	case a.k == vInt && b.k == vInt:
		switch {
		case a.i < b.i:
			c = -1
		case a.i > b.i:
			c = 1
		}
	case (a.k == vInt || a.k == vFloat) && (b.k == vInt || b.k == vFloat):
		x, _ := a.num()
		y, _ := b.num()
		switch {
		case x < y:
			c = -1
		case x > y:
			c = 1
		}
	case a.k == vStr && b.k == vStr:
		c = strings.Compare(a.s, b.s)
	case a.k == vBool && b.k == vBool:
		if a.b != b.b {
			c = 1
		}
		if op != "==" && op != "!=" {
			return false
		}
	default:
		return op == "!=" && a.k != vNull && b.k != vNull
	}
	switch op {
	case "==":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	default:
		return c >= 0
	}
}

func compileIn(x *inNode, d *collData) evalFn {
	inner := compileNode(x.x, d)
	neg := x.neg
	fn := x.x.(*fieldNode)
	if len(fn.path) == 0 {
		switch fn.typ() {
		case tyInt:
			set := make(map[int64]struct{}, len(x.items))
			var floats []float64
			for _, it := range x.items {
				if it.k == vInt {
					set[it.i] = struct{}{}
				} else if f, ok := it.num(); ok {
					floats = append(floats, f)
				}
			}
			c := d.cols[fn.f.pos]
			return func(r int32) value {
				v := c.i64[r]
				_, hit := set[v]
				for _, f := range floats {
					hit = hit || float64(v) == f
				}
				return value{k: vBool, b: hit != neg}
			}
		case tyString:
			set := make(map[string]struct{}, len(x.items))
			for _, it := range x.items {
				set[it.s] = struct{}{}
			}
			c := d.cols[fn.f.pos]
			return func(r int32) value {
				_, hit := set[c.s[r]]
				return value{k: vBool, b: hit != neg}
			}
		}
	}
	items := x.items
	return func(r int32) value {
		v := inner(r)
		if v.k == vNull {
			return value{k: vBool, b: false}
		}
		hit := false
		for _, it := range items {
			if compare(v, it, "==") {
				hit = true
				break
			}
		}
		return value{k: vBool, b: hit != neg}
	}
}
