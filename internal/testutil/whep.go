package testutil

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/gradient-cdn/gradient/internal/whepclient"
)

// The WHEP client the tests use is the product's (internal/whepclient),
// under the names the tests know.
type (
	WHEPOptions    = whepclient.Options
	WHEPAccessUnit = whepclient.AccessUnit
	WHEPStats      = whepclient.Stats
	WHEPSession    = whepclient.Session
	WHEPError      = whepclient.Error
)

// DialWHEP opens a receive-only WebRTC session with a WHEP endpoint; see
// whepclient.Dial.
func DialWHEP(ctx context.Context, endpoint string, opts WHEPOptions) (*WHEPSession, error) {
	return whepclient.Dial(ctx, endpoint, opts)
}

// PostWHEP POSTs body to a WHEP endpoint and returns the status code and
// response body, for tests of refused offers.
func PostWHEP(ctx context.Context, endpoint, contentType string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil && !errors.Is(err, io.EOF) {
		return resp.StatusCode, string(b), err
	}
	return resp.StatusCode, string(b), nil
}
