package vod

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// MasterPlaylist is the title's HLS multivariant playlist: one
// EXT-X-STREAM-INF per rendition, pointing at <name>.m3u8 beside it.
func MasterPlaylist(m *Manifest) string {
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	for _, r := range m.Renditions {
		fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d,AVERAGE-BANDWIDTH=%d", bandwidthKbps(&r)*1000, r.Kbps*1000)
		if r.Width > 0 && r.Height > 0 {
			fmt.Fprintf(&b, ",RESOLUTION=%dx%d", r.Width, r.Height)
		}
		if r.Codecs != "" {
			fmt.Fprintf(&b, ",CODECS=%q", r.Codecs)
		}
		b.WriteString("\n" + r.Name + ".m3u8\n")
	}
	return b.String()
}

// bandwidthKbps is the rendition's HLS BANDWIDTH in kbit/s: its peak
// segment's rate, at least its average.
func bandwidthKbps(r *Rendition) int { return max(r.PeakKbps, r.Kbps) }

// MediaPlaylist is rendition r's fMP4 VOD media playlist; chunkURL gives
// the URI of a chunk (its init section and each segment) by digest.
func MediaPlaylist(m *Manifest, r *Rendition, chunkURL func(Digest) string) string {
	return mediaPlaylist(m, r, "VOD", m.TargetDuration, chunkURL)
}

// mediaPlaylist writes a media playlist of kind VOD (with EXT-X-ENDLIST)
// or EVENT (without: more segments follow) whose target duration is at
// least minTarget and covers every segment's EXTINF rounded.
func mediaPlaylist(m *Manifest, r *Rendition, kind string, minTarget time.Duration, chunkURL func(Digest) string) string {
	target := max(m.TargetDuration, minTarget)
	for _, s := range r.Segments {
		target = max(target, s.Duration.Round(time.Second))
	}
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n")
	fmt.Fprintf(&b, "#EXT-X-TARGETDURATION:%d\n", int64(math.Ceil(target.Seconds())))
	fmt.Fprintf(&b, "#EXT-X-PLAYLIST-TYPE:%s\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n", kind)
	fmt.Fprintf(&b, "#EXT-X-MAP:URI=%q\n", chunkURL(r.Init.Digest))
	for _, s := range r.Segments {
		if s.Discontinuity {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		fmt.Fprintf(&b, "#EXTINF:%.3f,\n%s\n", s.Duration.Seconds(), chunkURL(s.Digest))
	}
	if kind == "VOD" {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return b.String()
}
