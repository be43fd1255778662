package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// KeyDoc documents one configuration key.
type KeyDoc struct {
	// Key is the key's path; list items are written "clusters[].id".
	Key string
	// Type is what the value is: string, bool, number, duration, secret,
	// list or section.
	Type string
	// Default is the value used when the key is absent, as YAML would
	// write it ("" for none).
	Default string
	// Doc says what the key does.
	Doc string
}

var (
	durationType = reflect.TypeFor[Duration]()
	secretType   = reflect.TypeFor[Secret]()
)

// Reference lists every configuration key in file order, with its type,
// default and documentation, taken from the Config struct itself so it
// cannot drift from what Load accepts.
func Reference() []KeyDoc {
	var out []KeyDoc
	walkDocs(reflect.ValueOf(Default()).Elem(), "", &out)
	return out
}

func walkDocs(v reflect.Value, path string, out *[]KeyDoc) {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		key := join(path, name)
		fv := v.Field(i)
		kd := KeyDoc{Key: key, Type: typeName(f.Type), Doc: f.Tag.Get("doc")}
		switch {
		case f.Type == durationType || f.Type == secretType:
			kd.Default = showDefault(fv)
			*out = append(*out, kd)
		case f.Type.Kind() == reflect.Struct:
			*out = append(*out, kd)
			walkDocs(fv, key, out)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			*out = append(*out, kd)
			walkDocs(reflect.New(f.Type.Elem()).Elem(), key+"[]", out)
		default:
			kd.Default = showDefault(fv)
			*out = append(*out, kd)
		}
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t == secretType:
		return "secret"
	}
	switch t.Kind() {
	case reflect.Struct:
		return "section"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "list of sections"
		}
		return "list of " + typeName(t.Elem())
	case reflect.Bool:
		return "bool"
	case reflect.Float64, reflect.Int, reflect.Int64:
		return "number"
	default:
		return "string"
	}
}

func showDefault(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case Duration:
		return x.String()
	case Secret:
		return ""
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Slice:
		if v.Len() == 0 {
			return ""
		}
	}
	return fmt.Sprint(v.Interface())
}

// ReferenceMarkdown renders Reference as a Markdown table for the README.
func ReferenceMarkdown() string {
	var b strings.Builder
	b.WriteString("| key | type | default | meaning |\n|---|---|---|---|\n")
	for _, k := range Reference() {
		def := ""
		if k.Default != "" {
			def = "`" + k.Default + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", k.Key, k.Type, def, strings.ReplaceAll(k.Doc, "|", "\\|"))
	}
	return b.String()
}
