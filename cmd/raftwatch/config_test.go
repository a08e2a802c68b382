package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// serveFlags returns serve's flag set with args parsed, as cobra leaves it
// before PreRunE.
func serveFlags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := newServeCmd().Flags()
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// writeConfig writes a config file and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "raftwatch.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"id":                      "RAFTWATCH_ID",
		"data-dir":                "RAFTWATCH_DATA_DIR",
		"initial-cluster":         "RAFTWATCH_INITIAL_CLUSTER",
		"max-watchers-per-client": "RAFTWATCH_MAX_WATCHERS_PER_CLIENT",
		"config":                  "RAFTWATCH_CONFIG",
	} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%q) = %q, want %q", flag, got, want)
		}
	}
}

func TestConfigPrecedenceFlagOverEnvOverFileOverDefault(t *testing.T) {
	type src struct{ flag, env, file string } // "" = not given there
	cases := []struct {
		name  string
		flag  string // a serve flag
		given src
		want  string
	}{
		{"nothing given: the default", "heartbeat-timeout", src{}, "750ms"},
		{"file alone", "heartbeat-timeout", src{file: "2s"}, "2s"},
		{"env alone", "heartbeat-timeout", src{env: "3s"}, "3s"},
		{"flag alone", "heartbeat-timeout", src{flag: "4s"}, "4s"},
		{"env over file", "heartbeat-timeout", src{env: "3s", file: "2s"}, "3s"},
		{"flag over file", "heartbeat-timeout", src{flag: "4s", file: "2s"}, "4s"},
		{"flag over env", "heartbeat-timeout", src{flag: "4s", env: "3s"}, "4s"},
		{"flag over env over file", "heartbeat-timeout", src{flag: "4s", env: "3s", file: "2s"}, "4s"},
		{"string: file alone", "client-addr", src{file: "127.0.0.1:1"}, "127.0.0.1:1"},
		{"string: env over file", "client-addr", src{env: "127.0.0.1:2", file: "127.0.0.1:1"}, "127.0.0.1:2"},
		{"string: flag over env and file", "client-addr", src{flag: "127.0.0.1:3", env: "127.0.0.1:2", file: "127.0.0.1:1"}, "127.0.0.1:3"},
		{"bool: file alone", "fsm-sync", src{file: "true"}, "true"},
		{"bool: env false over file true", "fsm-sync", src{env: "false", file: "true"}, "false"},
		{"bool: flag over env", "fsm-sync", src{flag: "false", env: "true"}, "false"},
		{"initial-cluster in the flag's own syntax", "initial-cluster",
			src{file: "n1=127.0.0.1:7201,n2=127.0.0.1:7202"}, "n1=127.0.0.1:7201,n2=127.0.0.1:7202"},
		{"empty env counts as unset: the file wins", "client-addr", src{env: "", file: "127.0.0.1:1"}, "127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var args, environ []string
			if c.given.flag != "" {
				args = append(args, "--"+c.flag+"="+c.given.flag)
			}
			environ = append(environ, envName(c.flag)+"="+c.given.env) // empty when not given
			if c.given.file != "" {
				environ = append(environ, "RAFTWATCH_CONFIG="+writeConfig(t, c.flag+": "+c.given.file+"\n"))
			}
			fs := serveFlags(t, args...)
			var warn strings.Builder
			if err := loadConfig(fs, environ, nil, &warn); err != nil {
				t.Fatal(err)
			}
			if got := fs.Lookup(c.flag).Value.String(); got != c.want {
				t.Errorf("--%s = %q, want %q", c.flag, got, c.want)
			}
			if warn.Len() > 0 {
				t.Errorf("unexpected warning: %s", warn.String())
			}
		})
	}
}

func TestConfigFlagOverridesConfigEnv(t *testing.T) {
	fromFlag := writeConfig(t, "id: from-flag-file\n")
	fromEnv := writeConfig(t, "id: from-env-file\n")
	fs := serveFlags(t, "--config", fromFlag)
	if err := loadConfig(fs, []string{"RAFTWATCH_CONFIG=" + fromEnv}, nil, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("id").Value.String(); got != "from-flag-file" {
		t.Errorf("--id = %q, want the value of the file named by --config", got)
	}
}

// Every serve flag, whoever added it, is read from its variable and from
// the file, and then counts as given (so required flags may come from either).
func TestEveryServeFlagComesFromEnvAndFile(t *testing.T) {
	var names []string
	serveFlags(t).VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && f.Name != configFlag {
			names = append(names, f.Name)
		}
	})
	if len(names) < 30 {
		t.Fatalf("only %d serve flags found: %v", len(names), names)
	}
	for _, name := range names {
		def := serveFlags(t).Lookup(name).DefValue
		if def == "" {
			def = "x" // a string flag with no default
		}
		fs := serveFlags(t)
		if err := loadConfig(fs, []string{envName(name) + "=" + def}, nil, &strings.Builder{}); err != nil {
			t.Errorf("%s=%s: %v", envName(name), def, err)
		} else if !fs.Lookup(name).Changed {
			t.Errorf("%s did not set --%s", envName(name), name)
		}
		fs = serveFlags(t, "--config", writeConfig(t, name+": \""+def+"\"\n"))
		if err := loadConfig(fs, nil, nil, &strings.Builder{}); err != nil {
			t.Errorf("file key %s: %v", name, err)
		} else if !fs.Lookup(name).Changed {
			t.Errorf("file key %s did not set --%s", name, name)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown key names the key, the file and the closest flag",
			"id: n1\ndatadir: /tmp/x\n", []string{`unknown key "datadir"`, "line 2", "did you mean data-dir?"}},
		{"unknown key far from every flag gets no suggestion",
			"colour: blue\n", []string{`unknown key "colour"`}},
		{"help is not a key", "help: true\n", []string{`unknown key "help"`}},
		{"a bad int names the key and the type",
			"max-key-size: big\n", []string{"line 1", "max-key-size", "not a valid int", `"big"`}},
		{"a bad duration names the key",
			"id: n1\nheartbeat-timeout: 5\n", []string{"line 2", "heartbeat-timeout", "not a valid duration"}},
		{"a YAML 1.1 boolean is not a bool flag's syntax",
			"fsm-sync: yes\n", []string{"fsm-sync", "not a valid bool"}},
		{"a list is refused", "initial-cluster:\n  - n1=127.0.0.1:1\n", []string{"initial-cluster", "not a YAML list or mapping"}},
		{"a key with no value", "data-dir:\n", []string{"data-dir has no value"}},
		{"a key given twice", "id: a\nid: b\n", []string{"id given twice (first on line 1)"}},
		{"a file naming another", "config: other.yaml\n", []string{"may not name another"}},
		{"not a mapping", "- id\n", []string{"want a mapping"}},
		{"not YAML", "id: [\n", []string{"yaml"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeConfig(t, c.yaml)
			fs := serveFlags(t, "--config", path)
			err := loadConfig(fs, nil, nil, &strings.Builder{})
			if err == nil {
				t.Fatalf("no error for %q", c.yaml)
			}
			for _, w := range append(c.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if c.name == "unknown key far from every flag gets no suggestion" && strings.Contains(err.Error(), "did you mean") {
				t.Errorf("error %q suggests a flag", err)
			}
		})
	}
}

func TestConfigFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	err := loadConfig(serveFlags(t, "--config", path), nil, nil, &strings.Builder{})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error = %v, want one naming %s", err, path)
	}
}

func TestConfigEmptyFileSetsNothing(t *testing.T) {
	fs := serveFlags(t, "--config", writeConfig(t, "# nothing yet\n"))
	if err := loadConfig(fs, nil, nil, &strings.Builder{}); err != nil {
		t.Fatal(err)
	}
	if got := fs.Lookup("heartbeat-timeout").Value.String(); got != "750ms" {
		t.Errorf("--heartbeat-timeout = %s, want the default", got)
	}
}

func TestBadEnvValueIsAnErrorNamingTheVariable(t *testing.T) {
	err := loadConfig(serveFlags(t), []string{"RAFTWATCH_MAX_KEY_SIZE=big"}, nil, &strings.Builder{})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"RAFTWATCH_MAX_KEY_SIZE", `"big"`, "not a valid int for --max-key-size"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestUnknownEnvVarIsAWarningNotAnError(t *testing.T) {
	serve, _, err := newRootCmd().Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	others := otherFlagEnvNames(serve)
	if !others["RAFTWATCH_ENDPOINTS"] || others["RAFTWATCH_DATA_DIR"] {
		t.Fatalf("other commands' variables: want the client commands' RAFTWATCH_ENDPOINTS, not serve's own: %v", others)
	}
	environ := []string{
		"RAFTWATCH_DATADIR=/tmp/x",          // a typo: warned, with the right name
		"RAFTWATCH_ENDPOINTS=127.0.0.1:1",   // another command's: silent
		"RAFTWATCH_NOTHING_LIKE_IT=1",       // warned, no suggestion
		"RAFTWATCHER=1",                     // not our prefix: silent
		"RAFTWATCH_CLIENT_ADDR=127.0.0.1:9", // ours: applied
	}
	fs := serveFlags(t)
	var warn strings.Builder
	if err := loadConfig(fs, environ, others, &warn); err != nil {
		t.Fatalf("an unknown variable made an error: %v", err)
	}
	want := "warning: environment variable RAFTWATCH_DATADIR names no flag of serve; ignored (did you mean RAFTWATCH_DATA_DIR?)\n" +
		"warning: environment variable RAFTWATCH_NOTHING_LIKE_IT names no flag of serve; ignored\n"
	if warn.String() != want {
		t.Errorf("warnings:\n%s\nwant:\n%s", warn.String(), want)
	}
	if got := fs.Lookup("client-addr").Value.String(); got != "127.0.0.1:9" {
		t.Errorf("--client-addr = %q, want the variable's value", got)
	}
}

func TestEditDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"datadir", "data-dir", 1}, {"kitten", "sitting", 3}, {"id", "id", 0},
	} {
		if got := editDistance(c.a, c.b); got != c.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}
