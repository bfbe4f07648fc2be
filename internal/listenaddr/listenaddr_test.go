package listenaddr

import "testing"

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{":8080", true}, {"127.0.0.1:0", true}, {"[::1]:65535", true},
		{"8080", false}, {"host:", false}, {"host:http", false}, {":65536", false}, {":-1", false},
	} {
		if err := Check(tc.addr); (err == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
	}
}
