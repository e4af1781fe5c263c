package drill

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Write puts the report in dir as drill-<time>.md (for people) and
// drill-<time>.json (for machines), each 0600; it returns their paths.
func (r *Report) Write(dir string) (md, js string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	base := filepath.Join(dir, "drill-"+r.Started.Format("20060102T150405Z"))
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(base+".json", append(b, '\n'), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(base+".md", []byte(r.Markdown()), 0o600); err != nil {
		return "", "", err
	}
	return base + ".md", base + ".json", nil
}

// Markdown is the report for people.
func (r *Report) Markdown() string {
	var b strings.Builder
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	title := "Geo failover drill (offline)"
	if r.Kind == "live" {
		title = "Live Geo switchover drill"
	}
	fmt.Fprintf(&b, "# %s: %s\n\n", title, verdict)
	fmt.Fprintf(&b, "- Started %s, finished %s (%s)\n", r.Started.Format(time.RFC3339), r.Finished.Format(time.RFC3339), r.Finished.Sub(r.Started).Round(time.Second))
	if s := r.Snapshot; s.File != "" {
		fmt.Fprintf(&b, "- Snapshot `%s`: Raft index %d, sha256 `%s`, cluster `%s`, seal generation %d\n", s.File, s.Index, s.SHA256, s.Cluster, s.Generation)
	}
	var shape []string
	for _, site := range r.Shape {
		p := ""
		if site.Primary {
			p = ", primary"
		}
		shape = append(shape, fmt.Sprintf("%s (%d nodes%s)", site.Name, site.Nodes, p))
	}
	fmt.Fprintf(&b, "- Topology rehearsed: %s\n", strings.Join(shape, ", "))
	if r.Kind == "live" {
		fmt.Fprintf(&b, "- **Longest write gap** during the switchovers: %.3f s\n\n", r.WriteGap)
	} else {
		fmt.Fprintf(&b, "- Unsealed with: %s\n", r.Unsealed)
		fmt.Fprintf(&b, "- **RTO**: %.1f s from the loss of the primary site to the first acknowledged write\n", r.RTO)
		if r.RPO != nil {
			fmt.Fprintf(&b, "- **RPO**: at most %d Raft entries, %.3f s (kept every entry up to index %d)\n", r.RPO.LostEntriesAtMost, r.RPO.LostSeconds, r.RPO.KeptIndex)
		}
		fmt.Fprintf(&b, "- Secrets checked: %d secret-engine entries of the snapshot, compared by keyed hash (their storage paths are in the JSON report)\n\n", r.SecretsChecked)
	}
	b.WriteString("## Checks\n\n| check | result | detail |\n| --- | --- | --- |\n")
	for _, c := range r.Checks {
		res := "pass"
		if !c.OK {
			res = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Name, res, strings.ReplaceAll(strings.ReplaceAll(c.Detail, "|", "\\|"), "\n", "<br>"))
	}
	b.WriteString("\n## Steps\n\n| at | step | took |\n| --- | --- | --- |\n")
	for _, st := range r.Steps {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", st.At.Format("15:04:05.000"), strings.ReplaceAll(st.What, "|", "\\|"), st.Took)
	}
	return b.String()
}
