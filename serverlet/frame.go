package serverlet

//#cgo pkg-config: libavutil
//#include <libavutil/frame.h>
import "C"

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/asticode/go-astiav"
)

// Frame is one decoded video picture in planar YUV 4:2:0 handed to a
// FrameFunc. Its planes are writable in place; they are valid only during
// the call.
type Frame struct {
	f *astiav.Frame
	// PTS is the frame's presentation time relative to the stream start.
	PTS time.Duration
	// Key tells that the frame will be encoded as a keyframe (the source
	// had one here).
	Key bool
}

// Width is the picture width in pixels.
func (f *Frame) Width() int { return f.f.Width() }

// Height is the picture height in pixels.
func (f *Frame) Height() int { return f.f.Height() }

// AV is the underlying FFmpeg frame, for serverlets that use go-astiav
// themselves.
func (f *Frame) AV() *astiav.Frame { return f.f }

// Plane returns plane i (0 = Y, 1 = U, 2 = V) and its stride (bytes per
// row). The chroma planes are half the width and height of the picture.
// Row r of plane i is data[r*stride : r*stride+planeWidth].
func (f *Frame) Plane(i int) (data []byte, stride int) {
	if i < 0 || i > 2 {
		return nil, 0
	}
	c := (*C.AVFrame)(f.f.UnsafePointer())
	h := f.f.Height()
	if i > 0 {
		h = (h + 1) / 2
	}
	stride = int(c.linesize[i])
	if c.data[i] == nil || stride <= 0 {
		return nil, 0
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(c.data[i])), stride*h), stride
}

// Fill sets every sample of plane i to v (e.g. 128 on U and V makes the
// picture gray).
func (f *Frame) Fill(i int, v byte) {
	data, _ := f.Plane(i)
	for j := range data {
		data[j] = v
	}
}

// makeWritable gives the frame its own buffers if it shares them (a frame
// out of a filter graph may reference the decoder's picture).
func makeWritable(f *astiav.Frame) error {
	if ret := C.av_frame_make_writable((*C.AVFrame)(f.UnsafePointer())); ret < 0 {
		return fmt.Errorf("make frame writable: %w", astiav.Error(int(ret)))
	}
	return nil
}
