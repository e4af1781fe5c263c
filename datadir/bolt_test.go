package datadir

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	hraft "github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// makeBoltFile writes a bbolt file shaped like vault.db and raft.db at
// once: a "data" bucket of size bytes of values (1 to 4 KiB, random, some
// of them large enough for overflow pages), a "config" bucket, a bucket
// of small buckets (inline), and a "logs" bucket of 8-byte keys; then
// deletes a tenth of the data, so the file has free pages too. It is
// written as OpenBao writes (NoFreelistSync).
func makeBoltFile(t testing.TB, path string, size int, seed uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(seed, seed))
	written, n := 0, 0
	for written < size {
		err := db.Update(func(tx *bolt.Tx) error {
			data, err := tx.CreateBucketIfNotExists([]byte("data"))
			if err != nil {
				return err
			}
			for range 500 {
				v := make([]byte, 1024+rng.IntN(3072))
				if rng.IntN(50) == 0 {
					v = make([]byte, 3*4096+rng.IntN(4096)) // overflow pages
				}
				for i := range v {
					v[i] = byte(rng.Uint32())
				}
				key := fmt.Sprintf("logical/%08x/secret/%d", rng.Uint32(), n)
				if err := data.Put([]byte(key), v); err != nil {
					return err
				}
				written += len(v)
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err = db.Update(func(tx *bolt.Tx) error {
		conf, err := tx.CreateBucketIfNotExists([]byte("config"))
		if err != nil {
			return err
		}
		conf.Put([]byte("latest_indexes"), []byte{0x08, 0x03, 0x10, 0x2a})
		small, err := tx.CreateBucketIfNotExists([]byte("small"))
		if err != nil {
			return err
		}
		for i := range 20 {
			b, err := small.CreateBucket([]byte(fmt.Sprintf("b%02d", i)))
			if err != nil {
				return err
			}
			b.Put([]byte("k"), []byte("v"))
		}
		logs, err := tx.CreateBucketIfNotExists([]byte("logs"))
		if err != nil {
			return err
		}
		for i := uint64(1); i <= 2000; i++ {
			k := binary.BigEndian.AppendUint64(nil, i)
			logs.Put(k, bytes.Repeat([]byte{byte(i)}, 100))
		}
		c := tx.Bucket([]byte("data")).Cursor()
		i := 0
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if i++; i%10 == 0 {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestVerifyBoltSound: a sound file passes, with its counts.
func TestVerifyBoltSound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	makeBoltFile(t, path, 4<<20, 1)
	st, err := verifyBolt(path)
	if err != nil {
		t.Fatalf("a sound file: %v", err)
	}
	if st.Keys < 1000 || st.Buckets != 24 || st.HighWater < 1000 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestVerifyBoltDamage damages a bbolt file every way the chaos campaign
// does, and more (random 64 KiB pages, random bytes anywhere, bit flips,
// truncation, a zeroed page, a swapped page): verifyBolt never panics,
// and every file it passes, bbolt opens writable, as OpenBao does (with
// its consistency walk), and reads whole, in a process of its own (a
// panic there would end this one). Files it refuses have page damage it
// names.
func TestVerifyBoltDamage(t *testing.T) {
	dir := t.TempDir()
	golden := filepath.Join(dir, "golden.db")
	makeBoltFile(t, golden, 1<<20, 2)
	orig, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	st, err := verifyBolt(golden)
	if err != nil {
		t.Fatal(err)
	}
	used := int(st.HighWater) * st.PageSize
	rng := rand.New(rand.NewPCG(7, 7))
	var passed []string
	refused := 0
	kinds := map[string]int{}
	cases := 400
	if testing.Short() {
		cases = 100
	}
	for i := range cases {
		b := append([]byte(nil), orig...)
		var kind string
		switch i % 6 {
		case 0: // 64 KiB of random bytes on page boundaries, within the pages in use
			kind = "random pages"
			off := (2 + rng.IntN(int(st.HighWater)-18)) * st.PageSize
			fill(rng, b[off:off+64<<10])
		case 1: // 64 KiB of random bytes anywhere
			kind = "random bytes"
			off := rng.IntN(used - 64<<10)
			fill(rng, b[off:off+64<<10])
		case 2: // a few bit flips
			kind = "bit flips"
			for range 1 + rng.IntN(8) {
				b[rng.IntN(used)] ^= 1 << rng.IntN(8)
			}
		case 3: // truncated
			kind = "truncated"
			b = b[:rng.IntN(used)]
		case 4: // a page zeroed
			kind = "zeroed page"
			p := rng.IntN(int(st.HighWater))
			clear(b[p*st.PageSize : (p+1)*st.PageSize])
		case 5: // a page copied over another
			kind = "page copied"
			p, q := rng.IntN(int(st.HighWater)), rng.IntN(int(st.HighWater))
			copy(b[p*st.PageSize:(p+1)*st.PageSize], orig[q*st.PageSize:(q+1)*st.PageSize])
		}
		path := filepath.Join(dir, fmt.Sprintf("case-%d.db", i))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := verifyBolt(path)
		var d *boltDamage
		switch {
		case err == nil:
			passed = append(passed, path)
			continue
		case errors.As(err, &d) && strings.HasPrefix(d.what, "unreadable structure"):
			t.Fatalf("case %d (%s): verifyBolt panicked: %v", i, kind, err)
		case errors.As(err, &d), errors.Is(err, errBoltEmpty):
			refused++
			kinds[kind]++
		default:
			t.Fatalf("case %d (%s): %v", i, kind, err)
		}
		os.Remove(path)
	}
	if out, err := openInChild(passed); err != nil {
		t.Fatalf("verifyBolt passed a file bbolt cannot open: %v\n%s", err, out)
	}
	t.Logf("%d damaged files: %d refused (%v), %d passed and opened whole by bbolt", cases, refused, kinds, len(passed))
	if kinds["random pages"] == 0 || kinds["truncated"] == 0 {
		t.Fatal("no damaged page was found")
	}
}

func fill(rng *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
}

// openInChild opens each of paths in a child process as OpenBao does
// (writable, NoFreelistSync: bbolt walks every page), reads every key and
// writes one; the child names each file before it opens it.
func openInChild(paths []string) (string, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltOpenChild$", "-test.v")
	cmd.Env = append(os.Environ(), "GSA_BOLT_OPEN="+strings.Join(paths, string(os.PathListSeparator)))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestBoltOpenChild is openInChild's child.
func TestBoltOpenChild(t *testing.T) {
	paths := os.Getenv("GSA_BOLT_OPEN")
	if paths == "" {
		t.Skip("the child of openInChild")
	}
	for _, p := range filepath.SplitList(paths) {
		t.Logf("opening %s", p)
		openWhole(t, p)
	}
}

func openWhole(t *testing.T, path string) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		// A clean error is fine: bbolt refused, it did not crash.
		t.Logf("bbolt refused it: %v", err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var walk func(b *bolt.Bucket) error
		walk = func(b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					return walk(b.Bucket(k))
				}
				return nil
			})
		}
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) })
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("data"))
		if err != nil {
			return err
		}
		return b.Put([]byte("after"), bytes.Repeat([]byte("x"), 8192))
	}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkVerifyBolt measures the start's check on a vault.db of
// GSA_VERIFY_MB megabytes (default 200), against bbolt's own open as
// OpenBao does it (writable, NoFreelistSync: bbolt walks every page to
// rebuild its freelist at every start).
//
//	GSA_VERIFY_MB=200 go test ./appliance -run '^$' -bench VerifyBolt -benchtime 5x
func BenchmarkVerifyBolt(b *testing.B) {
	mb := 200
	if v, err := strconv.Atoi(os.Getenv("GSA_VERIFY_MB")); err == nil && v > 0 {
		mb = v
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "vault.db")
	makeBoltFile(b, path, mb<<20, 3)
	fi, _ := os.Stat(path)
	b.Logf("file: %s", sizeText(fi.Size()))
	b.Run("verify", func(b *testing.B) {
		for range b.N {
			if _, err := verifyBolt(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inspectVault", func(b *testing.B) {
		for range b.N {
			if f := inspectVault(path); f.state != FileOK {
				b.Fatal(f.damage)
			}
		}
	})
	b.Run("bbolt-open", func(b *testing.B) {
		for range b.N {
			db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
			if err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
	})
}

// BenchmarkInspectRaftLog measures the start's check of a raft.db of
// 20,000 log entries of 1 KiB (OpenBao keeps up to about 18,000: 10,240
// trailing after a snapshot, which it takes every 8,192).
func BenchmarkInspectRaftLog(b *testing.B) {
	path := filepath.Join(b.TempDir(), "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bolt.Options{NoFreelistSync: true}})
	if err != nil {
		b.Fatal(err)
	}
	var logs []*hraft.Log
	for i := uint64(1); i <= 20000; i++ {
		logs = append(logs, &hraft.Log{Index: i, Term: 1 + i/5000, Type: hraft.LogCommand, Data: bytes.Repeat([]byte{byte(i)}, 1024), AppendedAt: time.Now()})
		if len(logs) == 1000 {
			if err := store.StoreLogs(logs); err != nil {
				b.Fatal(err)
			}
			logs = nil
		}
	}
	store.SetUint64([]byte("CurrentTerm"), 4)
	store.Close()
	b.ResetTimer()
	for range b.N {
		if f := inspectRaftLog(path); f.state != FileOK || f.logs != 20000 {
			b.Fatalf("%+v", f)
		}
	}
}
