package svcmgr

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    map[string]string
		wantErr string
	}{
		{name: "empty", give: "", want: map[string]string{}},
		{
			name: "mixed",
			give: "# comment\n\nA=1\n  B = two words  \nexport C=3\r\nD='lit $X \\n' # c\nE=\"q \\\"x\\\" \\n\\t\\\\\"\nF=val # trailing\nG=\nH=a=b\n",
			want: map[string]string{
				"A": "1", "B": "two words", "C": "3", "D": `lit $X \n`,
				"E": "q \"x\" \n\t\\", "F": "val", "G": "", "H": "a=b",
			},
		},
		{name: "last wins", give: "A=1\nA=2\n", want: map[string]string{"A": "2"}},
		{name: "hash inside value", give: "A=a#b\n", want: map[string]string{"A": "a#b"}},
		{name: "no equals", give: "JUSTAKEY\n", wantErr: "line 1: missing '='"},
		{name: "bad key", give: "1A=x\n", wantErr: `line 1: invalid key "1A"`},
		{name: "unterminated double", give: "A=1\nB=\"secret\n", wantErr: "line 2: key B: unterminated double quote"},
		{name: "unterminated single", give: "B='secret\n", wantErr: "unterminated single quote"},
		{name: "junk after quote", give: "B=\"x\"secret\n", wantErr: "unexpected text after closing quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnvFile(strings.NewReader(tt.give))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("error leaks the value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteEnvFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.env")
	want := map[string]string{"PORT": "8080", "Q": `a "b" \c $d 'e'`, "EMPTY": "", "TAB": "a\tb"}
	if err := WriteEnvFile(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := WriteEnvFile(path, map[string]string{"A": "x\ny"}); err == nil {
		t.Fatal("newline in value accepted")
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		give    Spec
		wantErr string
	}{
		{give: Spec{ReleaseDir: "/srv/r1", Port: 8080}},
		{give: Spec{}, wantErr: "release_dir is required"},
		{give: Spec{ReleaseDir: "rel"}, wantErr: "must be absolute"},
		{give: Spec{ReleaseDir: "/r", Port: 70000}, wantErr: "port 70000"},
		{give: Spec{ReleaseDir: "/r", Env: map[string]string{"A-B": "x"}}, wantErr: `env key "A-B"`},
	}
	for _, tt := range tests {
		err := tt.give.Validate()
		if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.give, err, tt.wantErr)
		}
	}
	if got := (Spec{ReleaseDir: "/r", Port: 9}).Expand("--listen=:{port} --root={release_dir}"); got != "--listen=:9 --root=/r" {
		t.Errorf("Expand = %q", got)
	}
}

func FuzzParseEnvFile(f *testing.F) {
	f.Add("A=1\nB='x'\nC=\"y\\n\"\n# c\nexport D=4 # x\n")
	f.Add("A=\"unterminated\n")
	f.Fuzz(func(t *testing.T, in string) {
		env, err := ParseEnvFile(strings.NewReader(in))
		if err != nil {
			return
		}
		for k, v := range env {
			if !ValidEnvKey(k) || strings.ContainsRune(v, 0) {
				t.Fatalf("accepted bad pair %q=%q", k, v)
			}
		}
		// Anything FormatEnvFile accepts must read back unchanged.
		data, err := FormatEnvFile(env)
		if err != nil {
			return
		}
		back, err := ParseEnvFile(strings.NewReader(string(data)))
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !reflect.DeepEqual(env, back) {
			t.Fatalf("round trip: %q != %q", back, env)
		}
	})
}
