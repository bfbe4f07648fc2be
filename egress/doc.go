// Package egress serves streams out of the hub to viewers: WebRTC (WHEP),
// HLS / LL-HLS, RTSP read, and the browser player page. It serves the
// rendition it is asked for; which rendition a viewer should get is the
// node's decision.
package egress
