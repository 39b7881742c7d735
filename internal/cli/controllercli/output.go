package controllercli

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/rollout"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// The CLI's JSON is its own, not protojson's: the same words the text output
// and the flags use, so a script can feed one command's answer to another.
//
//   - every integer is a JSON number (protojson quotes 64-bit ones), as in
//     `audit --jsonl` and the agent's /status;
//   - a duration is Go's form, "200ms", the form the flags take;
//   - a time is RFC 3339 in UTC;
//   - an enum is the CLI's word ("succeeded"), not COMMAND_OUTCOME_SUCCEEDED;
//   - bytes are base64, "" when empty;
//   - a message field that is not set is left out (no "created_at": null);
//     scalars are always there, zero or not, so a script can rely on them.

// jsonValue is the CLI's JSON form of m.
func jsonValue(m proto.Message) any {
	if m == nil {
		return object{}
	}
	return messageValue(m.ProtoReflect())
}

// object is a JSON object that keeps its fields in proto field order.
type object []field

type field struct {
	name  string
	value any
}

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshal(f.name)
		b.Write(k)
		b.WriteByte(':')
		v, err := marshal(f.value)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// without returns o less the named fields.
func (o object) without(names ...string) object {
	out := object{}
	for _, f := range o {
		if !containsString(names, f.name) {
			out = append(out, f)
		}
	}
	return out
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func messageValue(m protoreflect.Message) any {
	switch m.Descriptor().FullName() {
	case "google.protobuf.Timestamp":
		ts := m.Interface().(*timestamppb.Timestamp)
		return ts.AsTime().UTC().Format(time.RFC3339Nano)
	case "google.protobuf.Duration":
		return m.Interface().(*durationpb.Duration).AsDuration().String()
	}
	out := object{}
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		name := string(fd.Name())
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			items := make([]any, 0, l.Len())
			for j := 0; j < l.Len(); j++ {
				items = append(items, singular(fd, l.Get(j)))
			}
			out = append(out, field{name, items})
		case fd.IsMap():
			mp := map[string]any{}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				mp[k.String()] = singular(fd.MapValue(), mv)
				return true
			})
			out = append(out, field{name, mp})
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if m.Has(fd) {
				out = append(out, field{name, messageValue(v.Message())})
			}
		default:
			out = append(out, field{name, singular(fd, v)})
		}
	}
	return out
}

func singular(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageValue(v.Message())
	case protoreflect.EnumKind:
		return enumWord(fd.Enum(), v.Enum())
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BytesKind:
		return base64.StdEncoding.EncodeToString(v.Bytes())
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return f
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	default:
		return v.Int()
	}
}

// enumWord is the CLI's word for an enum value: rollout.OutcomeWord for a
// command's outcome, else the value's name without its enum's prefix, in
// lower case (COMMAND_OUTCOME_ROLLED_BACK: "rolled_back").
func enumWord(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	if ed.FullName() == golivev1.CommandOutcome(0).Descriptor().FullName() {
		return rollout.OutcomeWord(golivev1.CommandOutcome(n))
	}
	vd := ed.Values().ByNumber(n)
	if vd == nil {
		return ""
	}
	name := string(vd.Name())
	prefix := screamingSnake(string(ed.Name())) + "_"
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

func screamingSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// marshal is json.Marshal without HTML escaping ("<" stays "<").
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// writeJSON prints v indented (one document) or compact on one line (a
// stream of documents: `watch -o json`).
func writeJSON(w io.Writer, v any, compact bool) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if compact {
		out.Write(b)
	} else if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}
