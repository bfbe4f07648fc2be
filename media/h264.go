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
