package test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/openbao/openbao/api/v2"
)

// registers is a Jepsen-style workload: clients, each bound to one node as
// a client behind a sticky load balancer is, read, write unique values and
// check-and-set a few KV v2 keys, and record every operation with the
// times it was sent and answered. An operation whose outcome the client
// cannot know (503 "outcome unknown", a timeout, a broken connection) is
// kept as indeterminate: it may or may not have happened, at any time
// after it was sent. An answer that says nothing was done (503 not ready
// or sealed, refused connection) drops it: that is the appliance's
// promise, and the checker holds it to it. check then verifies that the
// history is linearizable (porcupine, one register per key, versions
// included: a write applied twice leaves a version nobody wrote) and audits
// every stored version: each client write stored at most once.
type registers struct {
	c     *cluster
	hc    *http.Client
	keys  []string
	start time.Time

	mu  sync.Mutex
	ops []porcupine.Operation

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// The operations on a register.
const (
	regRead = iota
	regWrite
	regCAS
)

type regInput struct {
	key  string
	kind int
	val  string // written
	exp  int    // the version a check-and-set expects
	node string // the node it was sent to (for the report only)
}

type regOutput struct {
	ver     int // read, or written
	val     string
	casFail bool   // the check-and-set did not match
	unknown bool   // the outcome is not known
	why     string // why not (for the round's summary)
}

type regState struct {
	ver int
	val string
}

// regModel is a KV v2 key: its current version and value.
var regModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range h {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range order {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(regState), input.(regInput), output.(regOutput)
		switch in.kind {
		case regRead:
			return out.ver == st.ver && out.val == st.val, st
		case regWrite:
			if out.unknown {
				return true, regState{st.ver + 1, in.val}
			}
			return out.ver == st.ver+1, regState{out.ver, in.val}
		default:
			switch {
			case out.unknown && st.ver == in.exp:
				return true, regState{st.ver + 1, in.val}
			case out.unknown:
				return true, st
			case out.casFail:
				return st.ver != in.exp, st
			}
			return st.ver == in.exp && out.ver == st.ver+1, regState{out.ver, in.val}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		res := fmt.Sprintf("v%d", out.ver)
		switch {
		case out.unknown:
			res = "unknown"
		case out.casFail:
			res = "cas mismatch"
		}
		switch in.kind {
		case regRead:
			return fmt.Sprintf("read %s -> v%d %q", in.key, out.ver, out.val)
		case regWrite:
			return fmt.Sprintf("write %s %q -> %s", in.key, in.val, res)
		}
		return fmt.Sprintf("cas %s v%d %q -> %s", in.key, in.exp, in.val, res)
	},
}

// startRegisters starts clients (client i bound to node i mod n) on keys
// named prefix-0..keys-1, which must be new.
func startRegisters(c *cluster, prefix string, keys, clients int) *registers {
	c.t.Helper()
	g := &registers{c: c, start: time.Now()}
	g.hc = c.httpClient()
	g.hc.Timeout = 10 * time.Second
	for k := range keys {
		g.keys = append(g.keys, fmt.Sprintf("%s-%d", prefix, k))
	}
	// Every version is kept, for the audit.
	admin := c.client(c.leader())
	for _, k := range g.keys {
		if _, err := admin.Logical().Write("kv/metadata/"+k, map[string]any{"max_versions": 100000}); err != nil {
			c.t.Fatalf("kv metadata of %s: %v", k, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	for i := range clients {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.client(ctx, i, c.nodes[i%len(c.nodes)])
		}()
	}
	return g
}

// client runs one client's operations until ctx ends.
func (g *registers) client(ctx context.Context, id int, m *member) {
	seen := map[string]int{} // the last version this client saw of each key
	rnd := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	for seq := 0; ctx.Err() == nil; seq++ {
		in := regInput{key: g.keys[rnd.IntN(len(g.keys))], node: m.id}
		switch p := rnd.IntN(10); {
		case p < 4:
			in.kind = regRead
		case p < 8:
			in.kind, in.val = regWrite, fmt.Sprintf("c%d-%d", id, seq)
		default:
			in.kind, in.val, in.exp = regCAS, fmt.Sprintf("c%d-%d", id, seq), seen[in.key]
		}
		call := time.Since(g.start).Nanoseconds()
		out, keep := g.do(ctx, m, in)
		ret := time.Since(g.start).Nanoseconds()
		if !keep {
			if ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond) // not a hot loop against a node that is down
			}
			continue
		}
		if out.unknown {
			ret = math.MaxInt64 / 2 // it may take effect at any time after it was sent
		} else if !out.casFail {
			seen[in.key] = out.ver
		}
		g.mu.Lock()
		g.ops = append(g.ops, porcupine.Operation{ClientId: id, Input: in, Call: call, Output: out, Return: ret})
		g.mu.Unlock()
	}
}

// do sends one operation to m; keep is false when the answer says nothing
// was done (or a read got no answer: it changed nothing).
func (g *registers) do(ctx context.Context, m *member, in regInput) (out regOutput, keep bool) {
	method, body := http.MethodGet, []byte(nil)
	switch in.kind {
	case regWrite:
		method, body = http.MethodPut, fmt.Appendf(nil, `{"data":{"v":%q}}`, in.val)
	case regCAS:
		method, body = http.MethodPut, fmt.Appendf(nil, `{"options":{"cas":%d},"data":{"v":%q}}`, in.exp, in.val)
	}
	req, _ := http.NewRequestWithContext(ctx, method, m.addr+"/v1/kv/data/"+in.key, bytes.NewReader(body))
	req.Header.Set("X-Vault-Token", g.c.res.RootToken)
	resp, err := g.hc.Do(req)
	if err != nil {
		if in.kind == regRead || errors.Is(err, syscall.ECONNREFUSED) {
			return out, false
		}
		return regOutput{unknown: true, why: errKind(err)}, true
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case in.kind == regRead && code == http.StatusNotFound:
		return regOutput{}, true
	case in.kind == regRead && code == http.StatusOK:
		var r struct {
			Data struct {
				Data     struct{ V string } `json:"data"`
				Metadata struct {
					Version int `json:"version"`
				} `json:"metadata"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &r) != nil {
			return out, false
		}
		return regOutput{ver: r.Data.Metadata.Version, val: r.Data.Data.V}, true
	case in.kind == regRead:
		return out, false
	case code == http.StatusOK:
		var r struct {
			Data struct {
				Version int `json:"version"`
			} `json:"data"`
		}
		if json.Unmarshal(b, &r) != nil {
			return regOutput{unknown: true, why: "200 without a version"}, true
		}
		return regOutput{ver: r.Data.Version}, true
	case in.kind == regCAS && code == http.StatusBadRequest && bytes.Contains(b, []byte("check-and-set parameter did not match")):
		return regOutput{casFail: true}, true
	case code == http.StatusServiceUnavailable && !bytes.Contains(b, []byte("outcome unknown")),
		code == http.StatusTooManyRequests, code == http.StatusInsufficientStorage:
		return out, false // refused: nothing was done
	case code == http.StatusServiceUnavailable:
		return regOutput{unknown: true, why: "503 outcome unknown"}, true
	}
	return regOutput{unknown: true, why: fmt.Sprint(resp.StatusCode)}, true
}

// stop ends the clients (an operation cut short is indeterminate) and
// waits for them.
func (g *registers) stop() {
	g.cancel()
	g.wg.Wait()
}

// regResult is what check found.
type regResult struct {
	ops, unknown, versions int
	why                    map[string]int // indeterminate operations by cause
	problems               []string
	// from, to span the operations a broken history was shown with (zero
	// if none broke): the nodes' logs of that time tell what happened.
	from, to time.Time
}

// check stops the clients, audits the stored versions through reader and
// checks the history. The audit comes first: every value is unique and
// every version is kept, so it tells which indeterminate writes took
// effect and as which version. One stored at version v stays in the
// history as a write of v with no known return (the checker places it
// anywhere after it was sent); one stored nowhere did not take effect and
// is left out. Without that, every indeterminate operation doubles what
// the checker searches.
func (g *registers) check(t *testing.T, reader *member) regResult {
	t.Helper()
	g.stop()
	g.mu.Lock()
	ops := append([]porcupine.Operation(nil), g.ops...)
	g.mu.Unlock()
	res := regResult{why: map[string]int{}}
	written := map[string]regInput{} // value -> the write
	for _, op := range ops {
		if in := op.Input.(regInput); in.kind != regRead {
			written[in.val] = in
		}
	}
	// The audit: every version of every key, read back.
	kv := g.c.client(reader).KVv2("kv")
	stored := map[string][]string{} // value -> "key@version" where it is stored
	storedAt := map[string]int{}    // value -> the first version that holds it
	for _, k := range g.keys {
		md, err := kv.GetMetadata(context.Background(), k)
		if errors.Is(err, api.ErrSecretNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("metadata of %s: %v", k, err)
		}
		for v := 1; v <= md.CurrentVersion; v++ {
			s, err := kv.GetVersion(context.Background(), k, v)
			if err != nil || s == nil {
				res.problems = append(res.problems, fmt.Sprintf("%s version %d cannot be read: %v", k, v, err))
				continue
			}
			res.versions++
			val, _ := s.Data["v"].(string)
			if in, ok := written[val]; !ok || in.key != k {
				res.problems = append(res.problems, fmt.Sprintf("%s version %d holds %q, which no client wrote to it", k, v, val))
			}
			if _, ok := storedAt[val]; !ok {
				storedAt[val] = v
			}
			stored[val] = append(stored[val], fmt.Sprintf("%s@%d", k, v))
		}
	}
	for val, where := range stored {
		if len(where) > 1 {
			res.problems = append(res.problems, fmt.Sprintf("write %q applied %d times: %s", val, len(where), strings.Join(where, ", ")))
		}
	}
	var history []porcupine.Operation
	for _, op := range ops {
		in, out := op.Input.(regInput), op.Output.(regOutput)
		if in.kind != regRead && !out.casFail {
			v, ok := storedAt[in.val]
			switch {
			case out.unknown && !ok:
				res.unknown++
				res.why[out.why]++
				continue // it did not take effect
			case out.unknown:
				res.unknown++
				res.why[out.why]++
				op.Output = regOutput{ver: v}
			case !ok || v != out.ver:
				res.problems = append(res.problems, fmt.Sprintf("write %q acknowledged as %s@%d is stored at %v", in.val, in.key, out.ver, stored[in.val]))
			}
		}
		history = append(history, op)
	}
	res.ops = len(history)
	switch r := porcupine.CheckOperationsTimeout(regModel, history, time.Minute); r {
	case porcupine.Illegal:
		res.problems = append(res.problems, fmt.Sprintf("the history of %d operations is not linearizable", len(history)))
		for _, part := range regModel.Partition(history) {
			why, from, to := explainIllegal(part)
			if why == "" {
				continue
			}
			res.problems = append(res.problems, why)
			if f := g.start.Add(time.Duration(from)); res.from.IsZero() || f.Before(res.from) {
				res.from = f
			}
			if t := g.start.Add(time.Duration(to)); t.After(res.to) {
				res.to = t
			}
		}
	case porcupine.Unknown:
		res.problems = append(res.problems, fmt.Sprintf("the linearizability check of %d operations did not finish within a minute", len(history)))
	}
	return res
}

// explainIllegal shows where one key's history stops being linearizable
// ("" if it is): the end of its longest linearizable prefix and the
// operations sent from there on, with their nodes and times (ms since
// the workload started); from and to span them (ns since then).
func explainIllegal(part []porcupine.Operation) (why string, from, to int64) {
	r, info := porcupine.CheckOperationsVerbose(regModel, part, time.Minute)
	if r != porcupine.Illegal {
		return "", 0, 0
	}
	var longest []int
	for _, l := range info.PartialLinearizations()[0] {
		if len(l) > len(longest) {
			longest = l
		}
	}
	in := map[int]bool{}
	for _, i := range longest {
		in[i] = true
	}
	order := make([]int, len(part))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(part[a].Call, part[b].Call) })
	first := len(order)
	for n, i := range order {
		if !in[i] {
			first = n
			break
		}
	}
	from = math.MaxInt64
	show := func(op porcupine.Operation) string {
		from = min(from, op.Call)
		to = max(to, op.Call)
		if op.Return < math.MaxInt64/4 {
			to = max(to, op.Return)
		}
		ret := "never"
		if op.Return < math.MaxInt64/4 {
			ret = fmt.Sprintf("%.1f", float64(op.Return)/1e6)
		}
		return fmt.Sprintf("  [%9.1f, %9s ms] client %d at %s: %s", float64(op.Call)/1e6, ret, op.ClientId, op.Input.(regInput).node,
			regModel.DescribeOperation(op.Input, op.Output))
	}
	var b strings.Builder
	k := part[0].Input.(regInput).key
	fmt.Fprintf(&b, "%s: %d of %d operations linearize; the last of them:", k, len(longest), len(part))
	for _, i := range longest[max(0, len(longest)-6):] {
		b.WriteString("\n" + show(part[i]))
	}
	b.WriteString("\nthen, in the order they were sent, none of which can come next:")
	for _, i := range order[first:min(len(order), first+12)] {
		if !in[i] {
			b.WriteString("\n" + show(part[i]))
		}
	}
	return b.String(), from, to
}

// The checker's report of a broken history names the operation that
// cannot come next: here a read, sent after a write was acknowledged as
// version 1, that still finds no version (a stale read).
func TestExplainIllegal(t *testing.T) {
	ms := int64(time.Millisecond)
	h := []porcupine.Operation{
		{ClientId: 0, Input: regInput{key: "k", kind: regWrite, val: "a", node: "node-1"}, Output: regOutput{ver: 1}, Call: 0, Return: 10 * ms},
		{ClientId: 1, Input: regInput{key: "k", kind: regRead, node: "node-2"}, Output: regOutput{}, Call: 20 * ms, Return: 30 * ms},
	}
	if r := porcupine.CheckOperations(regModel, h[:1]); !r {
		t.Fatal("a lone acknowledged write is not linearizable")
	}
	why, from, to := explainIllegal(h)
	if !strings.Contains(why, `k: 1 of 2 operations linearize`) || !strings.Contains(why, `client 1 at node-2: read k -> v0 ""`) || from != 0 || to != 30*ms {
		t.Fatalf("the report: %q, from %d to %d", why, from, to)
	}
	if why, _, _ := explainIllegal(h[:1]); why != "" {
		t.Fatalf("a linearizable history reported: %q", why)
	}
}
