package media

import "github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

// ParameterSets finds the (last) SPS and PPS in Annex-B bytes, such as an
// H.264 encoder's extradata. Either is nil when absent.
func ParameterSets(annexB []byte) (sps, pps []byte) {
	var nalus h264.AnnexB
	if err := nalus.Unmarshal(annexB); err != nil {
		return nil, nil
	}
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = append([]byte(nil), n...)
		case h264.NALUTypePPS:
			pps = append([]byte(nil), n...)
		}
	}
	return sps, pps
}

// WithParameterSets returns the H.264 access unit au with sps and pps in
// it, so that a decoder that starts at this keyframe (a reader joining at
// the GOP cache, a relay switching upstreams) can decode it. An access
// unit that already carries an SPS and a PPS is returned as it is, and so
// is au when sps or pps is empty. The parameter sets go after an access
// unit delimiter, which must stay the first NAL unit of the access unit
// (H.264 7.4.1.2.3); au itself is not modified.
func WithParameterSets(au [][]byte, sps, pps []byte) [][]byte {
	if len(sps) == 0 || len(pps) == 0 {
		return au
	}
	hasSPS, hasPPS, aud := false, false, 0
	for i, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			hasSPS = true
		case h264.NALUTypePPS:
			hasPPS = true
		case h264.NALUTypeAccessUnitDelimiter:
			if i == 0 {
				aud = 1
			}
		}
	}
	if hasSPS && hasPPS {
		return au
	}
	out := make([][]byte, 0, len(au)+2)
	out = append(out, au[:aud]...)
	out = append(out, sps, pps)
	for _, n := range au[aud:] {
		if len(n) > 0 {
			// A lone SPS or PPS of the access unit is replaced by the pair.
			if t := h264.NALUType(n[0] & 0x1f); t == h264.NALUTypeSPS || t == h264.NALUTypePPS {
				continue
			}
		}
		out = append(out, n)
	}
	return out
}
