package test

import (
	"net/http"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// rootNode is the single active node an advisory test attacks: initialized
// (3 shares, threshold 2), unsealed, with its root token.
type rootNode struct {
	t        *testing.T
	bin      string
	tr       *harness.Transcript
	addr, v1 string // the API, and its /v1/ prefix
	res      initOutput
	root     string
	hc       *http.Client
}

func newRootNode(t *testing.T) *rootNode {
	t.Helper()
	n := &rootNode{t: t, bin: harness.Binary(t), tr: &harness.Transcript{}, hc: &http.Client{Timeout: time.Minute}}
	n.addr, n.res = startActive(t, n.tr, n.bin, "--shares", "3", "--threshold", "2")
	n.root, n.v1 = n.res.RootToken, n.addr+"/v1/"
	return n
}

// must sends a request under /v1/ with the root token and fails the test
// unless it is answered 2xx; it returns the answer's body.
func (n *rootNode) must(method, path string, body any) string {
	n.t.Helper()
	code, out := call(n.t, n.hc, method, n.v1+path, n.root, body)
	if code/100 != 2 {
		n.t.Fatalf("%s %s: %d %s", method, path, code, out)
	}
	return out
}
