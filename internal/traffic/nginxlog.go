package traffic

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"time"
)

// LogFormat is the nginx log_format the Follower reads (also in
// deploy/examples/nginx/golive-log.conf): one JSON object per line. Every
// value is a string; the ones read are msec (when the request ended),
// status (what the client got), upstream_addr, upstream_status and
// upstream_response_time (one entry per upstream attempt, ", " between
// attempts, " : " between upstream groups), request_time. Other keys are
// ignored, so the format may carry more.
const LogFormat = `log_format golive escape=json
    '{"msec":"$msec","status":"$status",'
    '"upstream_addr":"$upstream_addr","upstream_status":"$upstream_status",'
    '"upstream_response_time":"$upstream_response_time","request_time":"$request_time",'
    '"host":"$host","method":"$request_method","uri":"$uri"}';`

// Attempt is one upstream attempt of a logged request.
type Attempt struct {
	// Port is the upstream's port, 0 when the address is not a loopback
	// host:port ("-", a unix socket, a remote host, an upstream name
	// nginx logs when no server was available).
	Port int
	// Failed: the attempt got a 5xx, or no response at all.
	Failed bool
	// Latency is the upstream response time, -1 when unknown ("-").
	Latency time.Duration
}

// Line is the part of an access log line the Follower counts.
type Line struct {
	// End is when the request ended ($msec), zero when absent.
	End time.Time
	// Status is what nginx answered the client, 0 when unreadable.
	Status   int
	Attempts []Attempt
}

var errNotObject = errors.New("not a JSON object")

// ParseLine reads one log line in LogFormat. Attempts reuses dst's
// storage, so a loop allocates nothing once it has grown.
func ParseLine(line []byte, dst *Line) error {
	var addr, ustatus, utime, status, msec []byte
	err := scanObject(line, func(k, v []byte) {
		switch string(k) {
		case "upstream_addr":
			addr = v
		case "upstream_status":
			ustatus = v
		case "upstream_response_time":
			utime = v
		case "status":
			status = v
		case "msec":
			msec = v
		}
	})
	if err != nil {
		return err
	}
	dst.Attempts = dst.Attempts[:0]
	dst.Status, _ = strconv.Atoi(string(status))
	dst.End = time.Time{}
	dst.End = parseMsec(msec)
	if len(addr) == 0 || string(addr) == "-" {
		return nil
	}
	for i := 0; len(addr) > 0; i++ {
		var a, s, t []byte
		a, addr = nextItem(addr)
		s, ustatus = nextItem(ustatus)
		t, utime = nextItem(utime)
		at := Attempt{Port: loopbackPort(a), Latency: -1}
		code, err := strconv.Atoi(string(s))
		if err != nil {
			// No upstream status: the last attempt's is the client's.
			code = 0
			if len(addr) == 0 {
				code = dst.Status
			}
		}
		at.Failed = code == 0 || code >= 500
		if sec, ok := parseSeconds(t); ok {
			at.Latency = time.Duration(sec * float64(time.Second))
		}
		dst.Attempts = append(dst.Attempts, at)
	}
	return nil
}

// nextItem splits the first entry off an upstream list: entries are
// separated by ", " (attempts) or " : " (upstream groups).
func nextItem(b []byte) (item, rest []byte) {
	for i := 0; i < len(b); i++ {
		if b[i] == ',' || b[i] == ':' && i > 0 && b[i-1] == ' ' {
			return bytes.TrimSpace(b[:i]), bytes.TrimLeft(b[i+1:], " ")
		}
	}
	return bytes.TrimSpace(b), nil
}

// loopbackPort is the port of "127.x.x.x:port" or "[::1]:port", else 0.
func loopbackPort(a []byte) int {
	i := bytes.LastIndexByte(a, ':')
	if i <= 0 {
		return 0
	}
	host, port := a[:i], a[i+1:]
	if !bytes.HasPrefix(host, []byte("127.")) && string(host) != "[::1]" && string(host) != "localhost" {
		return 0
	}
	p, err := strconv.Atoi(string(port))
	if err != nil || p <= 0 || p > 65535 {
		return 0
	}
	return p
}

// parseMsec reads $msec ("1764540000.250", seconds with millisecond
// resolution) exactly; zero when unreadable.
func parseMsec(b []byte) time.Time {
	sec, frac, _ := bytes.Cut(b, []byte("."))
	s, err := strconv.ParseInt(string(sec), 10, 64)
	if err != nil || s <= 0 || len(frac) > 9 {
		return time.Time{}
	}
	var ns int64
	for i := 0; i < 9; i++ {
		ns *= 10
		if i < len(frac) {
			if frac[i] < '0' || frac[i] > '9' {
				return time.Time{}
			}
			ns += int64(frac[i] - '0')
		}
	}
	return time.Unix(s, ns)
}

// parseSeconds reads "0.123"; "-" or garbage is not ok.
func parseSeconds(b []byte) (float64, bool) {
	if len(b) == 0 || b[0] == '-' {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > 1e10 {
		return 0, false
	}
	return f, true
}

// scanObject calls fn for each member of a flat JSON object: the key and
// the raw value (a string's content without quotes and not unescaped; any
// other value's text). Nested objects and arrays are refused; the log
// format has none.
func scanObject(b []byte, fn func(k, v []byte)) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errors.New("want a key")
		}
		k, j, err := scanString(b, i)
		if err != nil {
			return err
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return errors.New("want ':'")
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return errors.New("want a value")
		}
		var v []byte
		switch b[i] {
		case '"':
			v, j, err = scanString(b, i)
			if err != nil {
				return err
			}
		case '{', '[':
			return errors.New("nested values are not read")
		default:
			j = i
			for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\t' {
				j++
			}
			v = b[i:j]
		}
		fn(k, v)
		i = skipSpace(b, j)
		if i >= len(b) {
			return errors.New("unterminated object")
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return nil
		default:
			return errors.New("want ',' or '}'")
		}
	}
}

// scanString reads the string starting at b[i] == '"': its raw content
// and the index after the closing quote.
func scanString(b []byte, i int) ([]byte, int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return b[i+1 : j], j + 1, nil
		}
	}
	return nil, 0, errors.New("unterminated string")
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}
