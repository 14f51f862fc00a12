package compare

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/stepup-dev/stepup/internal/load"
)

// A command that builds Options by hand, not through ParseScenarios, gets
// the same scenarios, and no process is started for options Run refuses.
func TestRunOptions(t *testing.T) {
	ok := Options{Runs: 1, Concurrency: 1, Duration: time.Second, Executable: "/nonexistent",
		ServeArgs: func(string) []string { return nil }, BaselineArgs: func(string, string, string) []string { return nil }}
	o := ok
	o.Scenarios = []string{load.Introspect, " client_credentials", load.Introspect}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(o.Scenarios, ","); got != "introspect,client_credentials,healthz" {
		t.Errorf("scenarios %s: want each once, in order, healthz added", got)
	}
	for name, change := range map[string]func(*Options){
		"fail/runs":       func(o *Options) { o.Runs = 0 },
		"fail/duration":   func(o *Options) { o.Duration = 0 },
		"fail/executable": func(o *Options) { o.Executable = "" },
		"fail/serve args": func(o *Options) { o.ServeArgs = nil },
		"fail/scenario":   func(o *Options) { o.Scenarios = []string{load.Refresh} },
	} {
		t.Run(name, func(t *testing.T) {
			o := ok
			change(&o)
			if err := Run(context.Background(), o, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "compare: ") {
				t.Errorf("Run: %v, want compare's refusal", err)
			}
		})
	}
}
