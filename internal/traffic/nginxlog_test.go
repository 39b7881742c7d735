package traffic

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golive/golive/internal/routertest"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    []Attempt
		status  int
		wantErr bool
	}{
		{name: "one attempt", give: `{"msec":"1764540000.250","status":"200","upstream_addr":"127.0.0.1:8081","upstream_status":"200","upstream_response_time":"0.012"}`,
			status: 200, want: []Attempt{{Port: 8081, Latency: 12 * time.Millisecond}}},
		{name: "5xx", give: `{"status":"503","upstream_addr":"127.0.0.1:8082","upstream_status":"503","upstream_response_time":"0.300"}`,
			status: 503, want: []Attempt{{Port: 8082, Failed: true, Latency: 300 * time.Millisecond}}},
		{name: "retried on the other slot", give: `{"status":"200","upstream_addr":"127.0.0.1:8081, 127.0.0.1:8082","upstream_status":"502, 200","upstream_response_time":"0.000, 0.004"}`,
			status: 200, want: []Attempt{{Port: 8081, Failed: true, Latency: 0}, {Port: 8082, Latency: 4 * time.Millisecond}}},
		{name: "two upstream groups", give: `{"status":"200","upstream_addr":"127.0.0.1:1 : 127.0.0.1:2","upstream_status":"404 : 200","upstream_response_time":"0.001 : 0.002"}`,
			status: 200, want: []Attempt{{Port: 1, Latency: time.Millisecond}, {Port: 2, Latency: 2 * time.Millisecond}}},
		{name: "no upstream", give: `{"status":"404","upstream_addr":"-","upstream_status":"-","upstream_response_time":"-"}`, status: 404},
		{name: "no response from upstream", give: `{"status":"504","upstream_addr":"127.0.0.1:8081","upstream_status":"-","upstream_response_time":"-"}`,
			status: 504, want: []Attempt{{Port: 8081, Failed: true, Latency: -1}}},
		{name: "client gave up", give: `{"status":"499","upstream_addr":"127.0.0.1:8081","upstream_status":"-","upstream_response_time":"0.999"}`,
			status: 499, want: []Attempt{{Port: 8081, Latency: 999 * time.Millisecond}}},
		{name: "remote and named upstreams are not routed", give: `{"status":"502","upstream_addr":"10.0.0.1:8081, golive_app","upstream_status":"502, 502"}`,
			status: 502, want: []Attempt{{Port: 0, Failed: true, Latency: -1}, {Port: 0, Failed: true, Latency: -1}}},
		{name: "ipv6 loopback, numbers unquoted, spaces", give: ` { "status" : 200 , "upstream_addr" : "[::1]:9000", "upstream_status": 200, "upstream_response_time": 0.5 } `,
			status: 200, want: []Attempt{{Port: 9000, Latency: 500 * time.Millisecond}}},
		{name: "escaped quote in another value", give: `{"uri":"/a\"b","status":"200","upstream_addr":"127.0.0.1:8081","upstream_status":"200","upstream_response_time":"0.001"}`,
			status: 200, want: []Attempt{{Port: 8081, Latency: time.Millisecond}}},
		{name: "fewer statuses than addresses", give: `{"status":"200","upstream_addr":"127.0.0.1:1, 127.0.0.1:2","upstream_status":"502"}`,
			status: 200, want: []Attempt{{Port: 1, Failed: true, Latency: -1}, {Port: 2, Latency: -1}}},
		{name: "not json", give: `127.0.0.1 - - [02/Dec/2026] "GET / HTTP/1.1" 200`, wantErr: true},
		{name: "unterminated", give: `{"status":"200`, wantErr: true},
		{name: "nested", give: `{"a":{"b":1}}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l Line
			err := ParseLine([]byte(tt.give), &l)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error, got %+v", l)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Status != tt.status || !slices.Equal(l.Attempts, tt.want) {
				t.Fatalf("got status %d %+v, want %d %+v", l.Status, l.Attempts, tt.status, tt.want)
			}
		})
	}
	var l Line
	if err := ParseLine([]byte(`{"msec":"1764540000.250","upstream_addr":"-"}`), &l); err != nil || !l.End.Equal(time.Unix(1764540000, 250e6)) {
		t.Fatalf("msec: %v %v", l.End, err)
	}
}

// TestLogFormatExample: the documented log_format is the one the parser
// reads, and a line nginx would write with it parses.
func TestLogFormatExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "examples", "nginx", "golive-log.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), LogFormat) {
		t.Fatalf("deploy/examples/nginx/golive-log.conf lacks LogFormat:\n%s", LogFormat)
	}
	// Expand the variables the way nginx does.
	line := regexp.MustCompile(`'\s*'|'|\n\s*`).ReplaceAllString(strings.TrimSuffix(strings.TrimPrefix(LogFormat, "log_format golive escape=json"), ";"), "")
	line = strings.NewReplacer("$msec", "1764540000.001", "$status", "200", "$upstream_addr", "127.0.0.1:8081",
		"$upstream_status", "200", "$upstream_response_time", "0.010", "$request_time", "0.011", "$host", "h",
		"$request_method", "GET", "$uri", "/").Replace(strings.TrimSpace(line))
	var l Line
	if err := ParseLine([]byte(line), &l); err != nil || len(l.Attempts) != 1 || l.Attempts[0].Port != 8081 {
		t.Fatalf("%s: %+v %v", line, l, err)
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`{"status":"200","upstream_addr":"127.0.0.1:8081, 127.0.0.1:8082","upstream_status":"502, 200","upstream_response_time":"0.000, 0.004"}`,
		`{"upstream_addr":"127.0.0.1:1 : 127.0.0.1:2","upstream_status":"- : 200","upstream_response_time":"1e400 : -1"}`,
		`{"upstream_addr":", , :","upstream_status":"::"}`,
		`{}`, `{`, `{"a"`, `{"a":`, `{"a":"\`, `{"a":1,}`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var l Line
		if err := ParseLine(b, &l); err != nil {
			return
		}
		for _, a := range l.Attempts {
			if a.Port < 0 || a.Port > 65535 || a.Latency < -1 {
				t.Fatalf("attempt %+v from %q", a, b)
			}
		}
	})
}

// TestLogFormatExampleNginx: the documented file passes nginx -t inside an
// http block.
func TestLogFormatExampleNginx(t *testing.T) {
	bin := routertest.LookPath(t, "nginx")
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "examples", "nginx", "golive-log.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	inc := strings.ReplaceAll(string(b), "/var/log/nginx/golive.json.log", filepath.Join(dir, "golive.json.log"))
	if inc == string(b) {
		t.Fatal("the example does not log to /var/log/nginx/golive.json.log")
	}
	if err := os.WriteFile(filepath.Join(dir, "golive-log.conf"), []byte(inc), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nginx.conf")
	main := "pid " + dir + "/nginx.pid;\nerror_log " + dir + "/error.log;\nevents {}\nhttp {\n    include " + filepath.Join(dir, "golive-log.conf") + ";\n}\n"
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-p", dir+"/", "-c", conf, "-e", filepath.Join(dir, "error.log")).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}
