package config

import (
	"fmt"
	"strings"
)

// Error is one problem in a configuration, tied to the key it is about.
type Error struct {
	// Path is the key, as written in the file: "read.balance",
	// "clusters[1].id". Empty for problems with the file as a whole.
	Path string
	// Line is the line of the key in the file, 0 when unknown (a Config
	// built in code).
	Line int
	// Msg says what is wrong and, where it can, what is expected.
	Msg string
}

func (e *Error) Error() string {
	s := e.Msg
	if e.Path != "" {
		s = e.Path + ": " + e.Msg
	}
	if e.Line > 0 {
		s += fmt.Sprintf(" (line %d)", e.Line)
	}
	return s
}

// Errors is every problem found in one configuration, in file order. Load,
// Parse and Validate return it (wrapped, for Load) so an operator sees all
// of them at once; errors.As(err, &config.Errors{}) recovers the list.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// errs collects Errors, giving each the line its path was read from.
type errs struct {
	list  Errors
	lines map[string]int
}

func (e *errs) add(path, format string, args ...any) {
	e.list = append(e.list, &Error{Path: path, Line: e.lineOf(path), Msg: fmt.Sprintf(format, args...)})
}

// lineOf returns the line of path or, failing that, of its closest parent.
func (e *errs) lineOf(path string) int {
	for path != "" {
		if l, ok := e.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

func (e *errs) err() error {
	if len(e.list) == 0 {
		return nil
	}
	return e.list
}
