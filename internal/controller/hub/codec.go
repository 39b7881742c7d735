package hub

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	// Register the proto codec we delegate to.
	_ "google.golang.org/grpc/encoding/proto"
)

// encoded is a message marshaled once and sent on many streams: a broadcast
// to thousands of agents costs one Marshal, not thousands.
type encoded struct {
	b []byte
}

func encodeOnce(m proto.Message) (*encoded, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return &encoded{b: b}, nil
}

// sharedCodec is the "proto" codec, except that it passes an *encoded
// through untouched. The bytes are never written to, so every stream may
// hold the same slice (SliceBuffer's Free is a no-op).
type sharedCodec struct{ proto encoding.CodecV2 }

// NewSharedCodec is the gRPC codec agent streams need: "proto", passing a
// broadcast's pre-encoded bytes through untouched.
func NewSharedCodec() *sharedCodec {
	return &sharedCodec{proto: encoding.GetCodecV2("proto")}
}

func (c *sharedCodec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(e.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c *sharedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

func (c *sharedCodec) Name() string { return "proto" }
