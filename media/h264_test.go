package media

import (
	"fmt"
	"testing"
)

func TestWithParameterSetsKeepsTheDelimiterFirst(t *testing.T) {
	sps, pps := []byte{0x67, 1}, []byte{0x68, 2}
	aud, sei, idr := []byte{0x09, 0x10}, []byte{0x06, 5}, []byte{0x65, 9}
	cases := []struct {
		name string
		au   [][]byte
		want [][]byte
	}{
		{"bare IDR", [][]byte{idr}, [][]byte{sps, pps, idr}},
		{"after the AUD", [][]byte{aud, sei, idr}, [][]byte{aud, sps, pps, sei, idr}},
		{"already carried", [][]byte{aud, sps, pps, idr}, [][]byte{aud, sps, pps, idr}},
		{"lone SPS replaced", [][]byte{aud, sps, idr}, [][]byte{aud, sps, pps, idr}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := WithParameterSets(c.au, sps, pps)
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Fatalf("WithParameterSets(%v) = %v, want %v", c.au, got, c.want)
			}
		})
	}
	if got := WithParameterSets([][]byte{idr}, nil, pps); len(got) != 1 {
		t.Fatalf("without an SPS the access unit must stay as it is, got %v", got)
	}
}
