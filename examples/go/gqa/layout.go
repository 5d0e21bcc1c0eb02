package gqa

/*
#include <gqa.h>
*/
import "C"

import (
	"fmt"
	"reflect"
	"strings"
)

// LayoutJSON reports the size and field offsets of the config structs as Go (cgo) sees them,
// for tests/python/test_layout.py, which compares them with C, Python (cffi) and Rust. The
// fields are read from cgo's own types, so every field of gqa.h is listed with no list here to
// keep up to date.
func LayoutJSON() string {
	object := func(t reflect.Type) string {
		var parts []string
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); f.Name != "_" { // cgo names the padding it adds "_"
				parts = append(parts, fmt.Sprintf("%q: %d", f.Name, f.Offset))
			}
		}
		return fmt.Sprintf(`{"size": %d, "fields": {%s}}`, t.Size(), strings.Join(parts, ", "))
	}
	structs := []struct {
		name  string
		value any
	}{
		{"gqa_prefill_config", C.gqa_prefill_config{}}, {"gqa_decode_config", C.gqa_decode_config{}},
		{"gqa_strides", C.gqa_strides{}}, {"gqa_merge_config", C.gqa_merge_config{}},
		{"gqa_batch_config", C.gqa_batch_config{}},
	}
	parts := make([]string, len(structs))
	for i, s := range structs {
		parts[i] = fmt.Sprintf("%q: %s", s.name, object(reflect.TypeOf(s.value)))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
