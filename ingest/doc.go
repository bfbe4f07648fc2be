// Package ingest brings published streams into the hub: RTSP
// ANNOUNCE/RECORD (gortsplib), SRT carrying MPEG-TS (gosrt + mediacommon),
// and, in the testsrc subpackage, a test-pattern publisher. It refuses what
// the hub cannot carry (anything but H.264 video with AAC or Opus audio, a
// second publisher, a hostile stream name) with a protocol error and a log
// line, and never serves viewers.
package ingest
