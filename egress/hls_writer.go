package egress

import (
	"net/http"
)

// hlsResponseWriter notes whether the muxer answered, and turns the 500
// gohlslib answers for a muxer closed under a waiting request into 404
// (the stream ended).
type hlsResponseWriter struct {
	http.ResponseWriter
	muxer  *hlsMuxer
	wrote  bool
	status int
}

func (w *hlsResponseWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if code == http.StatusInternalServerError && w.muxer != nil {
		select {
		case <-w.muxer.closing:
			if w.muxer.ended {
				code = http.StatusNotFound
			} else {
				code = http.StatusServiceUnavailable
			}
		default:
		}
	}
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *hlsResponseWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets long part downloads stream out.
func (w *hlsResponseWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// hlsDiscardWriter is a ResponseWriter that keeps only the status.
type hlsDiscardWriter struct {
	hdr    http.Header
	status int
}

func (w *hlsDiscardWriter) Header() http.Header {
	if w.hdr == nil {
		w.hdr = http.Header{}
	}
	return w.hdr
}

func (w *hlsDiscardWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *hlsDiscardWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return len(b), nil
}
