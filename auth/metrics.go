package auth

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// newRefusals is the counter of refusals: the log says each client's
// first refusal a minute, the counter says how many there were.
func newRefusals() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gradient_auth_refusals_total",
		Help: "Requests the authorizer refused, by action, protocol and reason (no_credentials, bad_credentials, forbidden).",
	}, []string{"action", "protocol", "reason"})
}

// Collector exports the refusal counter, for the node's registry.
func (a *Authorizer) Collector() prometheus.Collector { return a.refusals }

func reason(err error) string {
	switch {
	case errors.Is(err, ErrNoCredentials):
		return "no_credentials"
	case errors.Is(err, ErrBadCredentials):
		return "bad_credentials"
	}
	return "forbidden"
}
