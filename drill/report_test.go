package drill

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/geo"
)

// The report says PASSED only when it says so, lists every check with its
// verdict (a | or a newline in a detail does not break the table), and is
// written as Markdown and JSON, each 0600.
func TestReport(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := &Report{Kind: "offline", Started: at, Finished: at.Add(42 * time.Second), RTO: 5.2,
		RPO:    &geo.RPO{KeptIndex: 446, LostEntriesAtMost: 2, LostSeconds: 0.007},
		Checks: []Check{{Name: "unseal", OK: true, Detail: "3 nodes"}, {Name: "write after the promotion", OK: false, Detail: "a | b\nc"}},
		Steps:  []Step{{At: at, What: "snapshot checked", Took: "1ms"}}}
	md := r.Markdown()
	for _, want := range []string{"FAILED", "| unseal | pass | 3 nodes |", "| write after the promotion | **FAIL** | a \\| b<br>c |", "**RTO**: 5.2 s", "at most 2 Raft entries, 0.007 s"} {
		if !strings.Contains(md, want) {
			t.Errorf("the report lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	mdPath, jsPath, err := r.Write(filepath.Join(dir, "reports"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{mdPath, jsPath} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", p, fi, err)
		}
	}
	var back Report
	b, _ := os.ReadFile(jsPath)
	if err := json.Unmarshal(b, &back); err != nil || back.RPO.KeptIndex != 446 || len(back.Checks) != 2 || back.Passed {
		t.Fatalf("the JSON report reads back as %+v (%v)", back, err)
	}
}
