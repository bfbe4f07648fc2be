// Package media is Gradient's in-memory media model: tracks and access units
// (H.264 video, AAC and Opus audio, with PTS and DTS) and the per-node stream
// table, the Hub, which fans each published stream out to any number of
// readers.
//
// The Hub never lets a reader slow the publisher: every reader has a bounded
// queue, and a reader whose queue is full loses what it had queued and skips
// to the next keyframe. New readers start at the last keyframe (GOP cache),
// so playback starts without waiting for the next IDR.
//
// Nothing here knows about a protocol; ingest turns RTSP and SRT into Units,
// egress turns Units into WebRTC, HLS and RTSP.
package media
