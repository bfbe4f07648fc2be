// Package testutil holds helpers shared by Gradient's tests: a real H.264
// decoder (FFmpeg through go-astiav), test clips and publishers made with
// the ffmpeg command, and polling with deadlines.
package testutil
