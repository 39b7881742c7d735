package hub

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// snapshot is c's record for a reader: a new top-level message whose
// nested parts (services, results, labels) are those of a deep copy made
// at most once per change of the record. The leader's executor lists every
// agent on each pass; at 1,000 hosts a deep copy of each record per pass
// was a fifth of the controller's CPU in a rollout, while a record changes
// about once per heartbeat. Readers may set the top-level fields of what
// they get; they must not modify its nested messages (none does: they
// read them, or marshal them).
func (c *agentConn) snapshot() *golivev1.Agent {
	c.mu.Lock()
	if c.snap == nil || c.snapGen != c.gen {
		c.snap, c.snapGen = proto.Clone(c.record).(*golivev1.Agent), c.gen
	}
	snap := c.snap
	c.mu.Unlock()
	return shallowAgent(snap)
}

// shallowAgent copies src's fields, sharing their nested messages.
func shallowAgent(src *golivev1.Agent) *golivev1.Agent {
	dst := &golivev1.Agent{}
	d := dst.ProtoReflect()
	src.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		d.Set(fd, v)
		return true
	})
	return dst
}
