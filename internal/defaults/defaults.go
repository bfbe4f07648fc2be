// Package defaults completes hand-built configs: every package writes its
// defaults once, in its DefaultXConfig(), and its constructor fills the
// fields a caller left at zero from there with Fill.
package defaults

import "reflect"

// Fill sets each zero field of the struct *cfg to that field of def (the
// package's DefaultXConfig()), descending into nested structs, so that a
// hand-built config names only what it changes. Booleans are taken as
// given, since false is a choice; unexported fields are left alone.
func Fill[T any](cfg *T, def T) {
	fill(reflect.ValueOf(cfg).Elem(), reflect.ValueOf(def))
}

func fill(v, d reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		if !f.CanSet() || f.Kind() == reflect.Bool {
			continue
		}
		if f.Kind() == reflect.Struct {
			fill(f, d.Field(i))
			continue
		}
		if f.IsZero() {
			f.Set(d.Field(i))
		}
	}
}
