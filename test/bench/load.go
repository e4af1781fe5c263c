package main

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// result is one load phase's figures.
type result struct {
	ops       int
	errors    int
	elapsed   time.Duration
	latencies []time.Duration
}

func (r *result) add(o result) {
	r.ops += o.ops
	r.errors += o.errors
	r.elapsed += o.elapsed
	r.latencies = append(r.latencies, o.latencies...)
}

func (r result) throughput() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func (r result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	l := slices.Clone(r.latencies)
	slices.Sort(l)
	return l[min(len(l)-1, int(float64(len(l))*p))]
}

// keys is how many distinct secrets the load spreads over.
const keys = 256

func kvPath(i int) string { return fmt.Sprintf("/v1/secret/data/bench/key-%d", i%keys) }

// prepopulate writes every key once so reads find data.
func prepopulate(t *target) error {
	for i := range keys {
		code, err := t.request("POST", kvPath(i), map[string]any{"data": map[string]string{"v": "initial"}}, nil)
		if err != nil || code != 200 {
			return fmt.Errorf("%s: prepopulating answered %d: %v", t.name, code, err)
		}
	}
	return nil
}

// runLoad runs op on `workers` goroutines for d and measures each call.
func runLoad(t *target, workers int, d time.Duration, op func(t *target, worker, i int) error) result {
	var (
		mu  sync.Mutex
		all result
		wg  sync.WaitGroup
	)
	start := time.Now()
	stop := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine result
			for i := 0; time.Now().Before(stop); i++ {
				began := time.Now()
				if err := op(t, w, i); err != nil {
					mine.errors++
					continue
				}
				mine.latencies = append(mine.latencies, time.Since(began))
				mine.ops++
			}
			mu.Lock()
			all.add(mine)
			mu.Unlock()
		}()
	}
	wg.Wait()
	all.elapsed = time.Since(start)
	return all
}

func kvWrite(t *target, worker, i int) error {
	code, err := t.request("POST", kvPath(worker*7919+i), map[string]any{"data": map[string]string{"v": fmt.Sprintf("w%d-%d", worker, i)}}, nil)
	if err == nil && code != 200 {
		err = fmt.Errorf("status %d", code)
	}
	return err
}

func kvRead(t *target, worker, i int) error {
	var out struct {
		Data struct {
			Data map[string]string `json:"data"`
		} `json:"data"`
	}
	code, err := t.request("GET", kvPath(worker*7919+i), nil, &out)
	if err == nil && (code != 200 || out.Data.Data["v"] == "") {
		err = fmt.Errorf("status %d", code)
	}
	return err
}
