package notify

import (
	"strings"
	"testing"
	"time"
)

func TestParseReceiverFlag(t *testing.T) {
	tests := []struct {
		give    string
		want    Receiver
		wantErr string
	}{
		{give: "slack=https://hooks.slack.com/services/T0/B0/SECRET", want: Receiver{URL: "https://hooks.slack.com/services/T0/B0/SECRET", Format: FormatSlack}},
		{give: "json=http://127.0.0.1:9000/events", want: Receiver{URL: "http://127.0.0.1:9000/events", Format: FormatJSON}},
		{give: " JSON = https://ops.example.com/a?b=c ", want: Receiver{URL: "https://ops.example.com/a?b=c", Format: FormatJSON}},
		{give: "https://hooks.slack.com/services/T0/B0/SECRET", wantErr: "FORMAT=URL"},
		{give: "https://ops.example.com/hook?token=SECRET", wantErr: "FORMAT=URL"},
		{give: "https://ops.example.com/hook", wantErr: "FORMAT=URL"},
		{give: "teams=https://ops.example.com/SECRET", wantErr: `format "teams"`},
		{give: "slack=ftp://ops.example.com/SECRET", wantErr: "scheme"},
		{give: "slack=", wantErr: "missing"},
		{give: "json=https:///SECRET", wantErr: "no host"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got, err := ParseReceiverFlag(tt.give)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "SECRET") {
					t.Errorf("the error shows the URL: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.URL != tt.want.URL || got.Format != tt.want.Format {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Receiver{URL: "https://ops.example.com/hook"}
	tests := []struct {
		name    string
		give    Config
		wantErr string // "" for valid
	}{
		{"empty", Config{}, ""},
		{"defaults", Config{Receivers: []Receiver{ok, {URL: "http://x:1/", Format: FormatSlack, Timeout: time.Second}}}, ""},
		{"bad url", Config{Receivers: []Receiver{ok, {URL: "hooks.slack.com/SECRET"}}}, "receivers[1].url: scheme"},
		{"bad format", Config{Receivers: []Receiver{{URL: ok.URL, Format: "xml"}}}, "receivers[0].format"},
		{"negative timeout", Config{Receivers: []Receiver{{URL: ok.URL, Timeout: -1}}}, "receivers[0].timeout"},
		{"bad header", Config{Receivers: []Receiver{{URL: ok.URL, Headers: map[string]string{"X Bad": "v"}}}}, "receivers[0].headers"},
		{"content type header", Config{Receivers: []Receiver{{URL: ok.URL, Headers: map[string]string{"content-type": "text/plain"}}}}, "Content-Type is set"},
		{"duplicate name", Config{Receivers: []Receiver{{Name: "a", URL: ok.URL}, {Name: "a", URL: ok.URL}}}, `receivers[1].name: "a"`},
		{"queue size", Config{QueueSize: -1}, "queue_size"},
		{"attempts", Config{MaxAttempts: -2}, "max_attempts"},
		{"backoff", Config{BackoffBase: time.Minute, BackoffMax: time.Second}, "backoff_max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.give.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("the error shows the URL: %v", err)
			}
		})
	}
}

func TestDefaultNames(t *testing.T) {
	cfg := Config{Receivers: []Receiver{
		{URL: "https://hooks.slack.com/services/a"},
		{URL: "https://hooks.slack.com/services/b"},
		{URL: "http://127.0.0.1:8080/x", Name: "local"},
		{URL: "https://ops.example.com/x"},
	}}.withDefaults()
	var names []string
	for _, r := range cfg.Receivers {
		names = append(names, r.Name)
	}
	want := "hooks.slack.com hooks.slack.com-2 local ops.example.com"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("names = %q, want %q", got, want)
	}
	if cfg.Receivers[0].Format != FormatJSON || cfg.Receivers[0].Timeout != DefaultTimeout {
		t.Errorf("receiver defaults not applied: %+v", cfg.Receivers[0])
	}
}
