// Command bench measures the appliance against the stock OpenBao server
// built from the same module, in the same run on the same machine, and
// prints the figures and the ratio appliance/openbao. `make bench` runs it.
//
// Both servers run as processes on loopback, single node, Raft storage,
// plain HTTP, driven through the same bao API calls: each once with
// Shamir 1-of-1 (KV load, start to unsealed by a share) and once with
// its PKCS#11 seal on the same SoftHSM2 token (start to unsealed by the
// HSM). The phases alternate between the servers so drift in the
// machine's load hits both alike.
//
// With -baseline, a second appliance binary (another build, such as the
// one before a change to the request filter) runs in the same alternating
// rounds, and a second table gives appliance/baseline: the cost of the
// change on the same machine, in the same run.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/gitlabsim"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

func main() {
	appliance := flag.String("appliance", "bin/gitlab-secrets-appliance", "appliance binary to measure")
	peer := flag.String("peer", "", "stock OpenBao server binary (default: build ./test/bench/openbao)")
	workDir := flag.String("dir", ".bench", "working directory for data and logs (emptied first)")
	duration := flag.Duration("duration", 5*time.Second, "length of each load phase per server per round")
	rounds := flag.Int("rounds", 4, "load rounds (alternating servers)")
	workers := flag.Int("concurrency", 16, "concurrent clients in the load phases")
	starts := flag.Int("starts", 5, "process starts to time per server")
	baseline := flag.String("baseline", "", "a second appliance binary to compare the appliance with, in the same rounds (the load phases only)")
	flag.Parse()
	if err := run(*appliance, *peer, *baseline, *workDir, *duration, *rounds, *workers, *starts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(appBin, peerBin, baseBin, workDir string, d time.Duration, rounds, workers, starts int) error {
	os.RemoveAll(workDir)
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return err
	}
	if peerBin == "" {
		peerBin = filepath.Join(workDir, "openbao-server")
		fmt.Fprintln(os.Stderr, "building the stock OpenBao server from the same module ...")
		// -tags hsm: OpenBao's own PKCS#11 seal, to compare HSM unseals.
		cmd := exec.Command("go", "build", "-tags", "hsm", "-ldflags", "-s -w -X github.com/openbao/openbao/version.fullVersion=2.4.0", "-o", peerBin, "./test/bench/openbao")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building the peer: %w", err)
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 2 * workers, MaxIdleConnsPerHost: workers, Proxy: nil,
	}}
	hsm, err := harness.CreateSoftHSM(filepath.Join(workDir, "softhsm"), "bench")
	if err != nil {
		return err
	}
	for _, k := range []string{"appliance-kek", "openbao-kek"} {
		if err := hsm.GenerateKey(k); err != nil {
			return err
		}
	}
	pinFile := filepath.Join(workDir, "softhsm", "pin")
	if err := os.WriteFile(pinFile, []byte(hsm.PIN), 0o600); err != nil {
		return err
	}
	applianceHSM := fmt.Sprintf("seal {\n  pkcs11 {\n    library = %q\n    token_label = %q\n    pin_file = %q\n    key_label = \"appliance-kek\"\n  }\n  shamir {\n    shares = 1\n    threshold = 1\n  }\n}\n",
		hsm.Library, hsm.TokenLabel, pinFile)
	openbaoHSM := fmt.Sprintf("seal \"pkcs11\" {\n  lib = %q\n  token_label = %q\n  pin = %q\n  key_label = \"openbao-kek\"\n  mechanism = \"CKM_AES_GCM\"\n}\n",
		hsm.Library, hsm.TokenLabel, hsm.PIN)
	var targets []*target
	for _, s := range []struct{ name, kind, bin, seal string }{
		{"appliance", "appliance", appBin, ""}, {"openbao", "openbao", peerBin, ""},
		{"appliance-hsm", "appliance", appBin, applianceHSM}, {"openbao-hsm", "openbao", peerBin, openbaoHSM},
	} {
		t, err := newTarget(s.name, s.kind, s.bin, filepath.Join(workDir, s.name), client, s.seal, hsm.Env())
		if err != nil {
			return err
		}
		targets = append(targets, t)
	}
	shamirTargets := targets[:2]
	if baseBin != "" {
		t, err := newTarget("baseline", "appliance", baseBin, filepath.Join(workDir, "baseline"), client, "", nil)
		if err != nil {
			return err
		}
		targets = append(targets, t)
		shamirTargets = []*target{targets[0], t, targets[1]}
	}
	is, err := gitlabsim.NewIssuer()
	if err != nil {
		return err
	}
	defer is.Close()
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()

	m := map[string]*measures{}
	for _, t := range targets {
		m[t.name] = &measures{}
		st, err := os.Stat(t.bin)
		if err != nil {
			return err
		}
		m[t.name].binary = st.Size()
		// First boot initializes (and for the KV servers mounts KV v2 and
		// writes the keys).
		if _, err := t.bootToServing(); err != nil {
			return err
		}
		if !t.hsm {
			if err := t.mountKV(); err != nil {
				return err
			}
			if err := prepopulate(t); err != nil {
				return err
			}
			if err := provisionCI(t, is); err != nil {
				return err
			}
		}
		if err := t.stop(); err != nil {
			return err
		}
	}

	fmt.Fprintf(os.Stderr, "timing %d starts per server ...\n", starts)
	for range starts {
		for _, t := range targets[:4] {
			took, err := t.bootToServing()
			if err != nil {
				return err
			}
			m[t.name].starts = append(m[t.name].starts, took)
			if err := t.stop(); err != nil {
				return err
			}
		}
	}

	for _, t := range shamirTargets {
		if _, err := t.bootToServing(); err != nil {
			return err
		}
	}
	time.Sleep(3 * time.Second) // let both settle before reading idle RSS
	for _, t := range shamirTargets {
		rss, err := t.rssBytes()
		if err != nil {
			return err
		}
		m[t.name].rss = rss
	}

	fmt.Fprintf(os.Stderr, "load: %d rounds x %s per phase per server, %d clients ...\n", rounds, d, workers)
	tokens := map[string][]string{}
	for _, t := range shamirTargets {
		if tokens[t.name], err = jobTokens(is, t.addr, 2000); err != nil {
			return err
		}
	}
	cache := &jobTokenCache{toks: map[string]string{}}
	for range rounds {
		for _, t := range shamirTargets {
			m[t.name].write.add(runLoad(t, workers, d, kvWrite))
			m[t.name].read.add(runLoad(t, workers, d, kvRead))
			m[t.name].burst.add(runLoad(t, burstJobs, d, ciJob(tokens[t.name])))
			m[t.name].login.add(runLoad(t, workers, d, jwtLogin(tokens[t.name])))
			m[t.name].jobRead.add(runLoad(t, workers, d, jobRead(tokens[t.name], cache)))
		}
	}
	report(m["appliance"], m["openbao"], m["appliance-hsm"], m["openbao-hsm"], workers)
	if b := m["baseline"]; b != nil {
		reportBaseline(m["appliance"], b, workers)
	}
	return nil
}

// burstJobs is K, the concurrent CI jobs of the burst phase.
const burstJobs = 32

type measures struct {
	write, read, burst, login, jobRead result
	starts                             []time.Duration
	rss, binary                        int64
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func report(a, p, ah, ph *measures, workers int) {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "metric\tappliance\topenbao\tratio a/o\t\n")
	row := func(name string, av, pv float64, format string) {
		ratio := 0.0
		if pv != 0 {
			ratio = av / pv
		}
		fmt.Fprintf(w, "%s\t"+format+"\t"+format+"\t%.2f\t\n", name, av, pv, ratio)
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	row(fmt.Sprintf("KV v2 write ops/s (%d clients)", workers), a.write.throughput(), p.write.throughput(), "%.0f")
	row("KV v2 write p50 ms", ms(a.write.percentile(.50)), ms(p.write.percentile(.50)), "%.2f")
	row("KV v2 write p99 ms", ms(a.write.percentile(.99)), ms(p.write.percentile(.99)), "%.2f")
	row(fmt.Sprintf("KV v2 read ops/s (%d clients)", workers), a.read.throughput(), p.read.throughput(), "%.0f")
	row("KV v2 read p50 ms", ms(a.read.percentile(.50)), ms(p.read.percentile(.50)), "%.2f")
	row("KV v2 read p99 ms", ms(a.read.percentile(.99)), ms(p.read.percentile(.99)), "%.2f")
	row(fmt.Sprintf("JWT login ops/s (%d clients, CEL role)", workers), a.login.throughput(), p.login.throughput(), "%.0f")
	row("JWT login p50 ms", ms(a.login.percentile(.50)), ms(p.login.percentile(.50)), "%.2f")
	row(fmt.Sprintf("GitLab KV v2 read ops/s (%d clients, job token, project namespace)", workers), a.jobRead.throughput(), p.jobRead.throughput(), "%.0f")
	row("GitLab KV v2 read p50 ms", ms(a.jobRead.percentile(.50)), ms(p.jobRead.percentile(.50)), "%.2f")
	row(fmt.Sprintf("CI burst jobs/s (%d jobs: login + 3 reads)", burstJobs), a.burst.throughput(), p.burst.throughput(), "%.0f")
	row("CI burst job p50 ms", ms(a.burst.percentile(.50)), ms(p.burst.percentile(.50)), "%.1f")
	row("CI burst job p99 ms", ms(a.burst.percentile(.99)), ms(p.burst.percentile(.99)), "%.1f")
	row("start to unsealed by shares ms (median)", ms(median(a.starts)), ms(median(p.starts)), "%.0f")
	row("start to unsealed by HSM ms (median)", ms(median(ah.starts)), ms(median(ph.starts)), "%.0f")
	row("idle RSS MiB", mib(a.rss), mib(p.rss), "%.1f")
	row("binary size MiB", mib(a.binary), mib(p.binary), "%.1f")
	w.Flush()
	if errs := a.errors() + p.errors(); errs > 0 {
		fmt.Printf("errors during load: appliance %d, openbao %d\n", a.errors(), p.errors())
	}
	fmt.Println("goal: throughput ratio >= 0.95, latency and start ratios <= 1.05, binary ratio < 1")
}

func (m *measures) errors() int {
	return m.write.errors + m.read.errors + m.burst.errors + m.login.errors + m.jobRead.errors
}

// reportBaseline is the second table: the appliance against another
// appliance build, measured in the same rounds.
func reportBaseline(a, b *measures, workers int) {
	fmt.Println()
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "metric\tappliance\tbaseline\tratio a/b\t\n")
	row := func(name string, av, bv float64) {
		ratio := 0.0
		if bv != 0 {
			ratio = av / bv
		}
		fmt.Fprintf(w, "%s\t%.0f\t%.0f\t%.3f\t\n", name, av, bv, ratio)
	}
	row(fmt.Sprintf("KV v2 write ops/s (%d clients)", workers), a.write.throughput(), b.write.throughput())
	row(fmt.Sprintf("KV v2 read ops/s (%d clients)", workers), a.read.throughput(), b.read.throughput())
	row(fmt.Sprintf("JWT login ops/s (%d clients)", workers), a.login.throughput(), b.login.throughput())
	row(fmt.Sprintf("GitLab KV v2 read ops/s (%d clients)", workers), a.jobRead.throughput(), b.jobRead.throughput())
	row(fmt.Sprintf("CI burst jobs/s (%d jobs)", burstJobs), a.burst.throughput(), b.burst.throughput())
	w.Flush()
	if e := b.errors(); e > 0 {
		fmt.Printf("errors during load: baseline %d\n", e)
	}
	fmt.Println("goal (a change to the filter): throughput ratios a/b >= 0.98")
}
