package whepclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gradient-cdn/gradient/internal/whepclient"
)

// A POST that reaches no server is ErrUnreachable (the demo's viewers then
// try another node); one the server refuses is an *Error with its status
// and body, and not ErrUnreachable.
func TestDialTellsAnUnreachableEndpointFromARefusal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/live/x/whep"
	ln.Close()
	_, err = whepclient.Dial(ctx, dead, whepclient.Options{Loopback: true, Quiet: true})
	if !errors.Is(err, whepclient.ErrUnreachable) {
		t.Errorf("dial a closed port: %v, want ErrUnreachable", err)
	}

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/sdp" {
			t.Errorf("offer content type %q", r.Header.Get("Content-Type"))
		}
		http.Error(w, "stream not found", http.StatusNotFound)
	}))
	defer srv.Close()
	_, err = whepclient.Dial(ctx, srv.URL+"/live/x/whep", whepclient.Options{Loopback: true, Quiet: true})
	var he *whepclient.Error
	if !errors.As(err, &he) || he.Status != http.StatusNotFound || he.Body != "stream not found" || errors.Is(err, whepclient.ErrUnreachable) {
		t.Errorf("dial a refusing server: %v, want *Error 404 \"stream not found\"", err)
	}
}
