package egress

import "reflect"

// fillZero sets each zero field of the config *cfg, but its booleans, to
// that field of def (the package's DefaultXConfig()): a hand-built config
// names only what it changes, and the defaults stay written in one place.
// A boolean is taken as given, since its zero value is a choice.
func fillZero[T any](cfg *T, def T) {
	v, d := reflect.ValueOf(cfg).Elem(), reflect.ValueOf(def)
	for i := range v.NumField() {
		if f := v.Field(i); f.Kind() != reflect.Bool && f.IsZero() {
			f.Set(d.Field(i))
		}
	}
}
