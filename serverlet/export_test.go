package serverlet

// SetEncodeHook makes f run for every packet out of a rung's encoder (to
// make one rung panic) until the returned function restores none.
func SetEncodeHook(f func(rendition string)) (restore func()) {
	encodeHook.Store(&f)
	return func() { encodeHook.Store(nil) }
}
