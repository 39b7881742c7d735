package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"

	golivev1 "github.com/golive/golive/proto/golive/v1"
)

// pfCache keeps the preflight table of recent rollout records, decoded and
// encoded. The leader decodes the record of every running rollout on each
// of its passes and rewrites it on most, and the table, one HostChecks per
// host (1,000 at 1,000 hosts), no longer changes once the preflight ran:
// at 1,000 hosts its protojson was a third of a pass. The decoded
// messages are shared between Records: readers must not modify them
// (nobody does: the executor replaces the table, never edits it).
var pfCache = struct {
	sync.Mutex
	byID map[string]pfEntry
}{byID: map[string]pfEntry{}}

type pfEntry struct {
	raw []json.RawMessage
	hc  []*golivev1.HostChecks
}

// pfCacheSize bounds the entries (running rollouts, and a few just ended).
const pfCacheSize = 32

func pfLookup(id string) (pfEntry, bool) {
	pfCache.Lock()
	defer pfCache.Unlock()
	e, ok := pfCache.byID[id]
	return e, ok
}

func pfStore(id string, e pfEntry) {
	pfCache.Lock()
	defer pfCache.Unlock()
	if _, ok := pfCache.byID[id]; !ok && len(pfCache.byID) >= pfCacheSize {
		for k := range pfCache.byID {
			delete(pfCache.byID, k)
			break
		}
	}
	pfCache.byID[id] = e
}

// decodePreflight is the table stored as raw for rollout id.
func decodePreflight(id string, raw []json.RawMessage) ([]*golivev1.HostChecks, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	if e, ok := pfLookup(id); ok && len(e.raw) == len(raw) {
		same := true
		for i := range raw {
			if !bytes.Equal(e.raw[i], raw[i]) {
				same = false
				break
			}
		}
		if same {
			return e.hc[:len(e.hc):len(e.hc)], nil
		}
	}
	out := make([]*golivev1.HostChecks, 0, len(raw))
	for _, p := range raw {
		h := &golivev1.HostChecks{}
		if err := protojson.Unmarshal(p, h); err != nil {
			return nil, fmt.Errorf("%w: preflight: %v", ErrCorrupt, err)
		}
		out = append(out, h)
	}
	pfStore(id, pfEntry{raw: raw, hc: out})
	return out[:len(out):len(out)], nil
}

// encodePreflight is the stored form of rollout id's table hc.
func encodePreflight(id string, hc []*golivev1.HostChecks) ([]json.RawMessage, error) {
	if len(hc) == 0 {
		return nil, nil
	}
	if e, ok := pfLookup(id); ok && len(e.hc) == len(hc) {
		same := true
		for i := range hc {
			if e.hc[i] != hc[i] {
				same = false
				break
			}
		}
		if same {
			return e.raw, nil
		}
	}
	raw := make([]json.RawMessage, 0, len(hc))
	for _, h := range hc {
		b, err := Marshal.Marshal(h)
		if err != nil {
			return nil, err
		}
		raw = append(raw, b)
	}
	pfStore(id, pfEntry{raw: raw, hc: hc[:len(hc):len(hc)]})
	return raw, nil
}
