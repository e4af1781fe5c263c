package datadir

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"syscall"
)

// A bbolt file (vault.db, raft/raft.db) is verified here before bbolt
// opens it. bbolt trusts its file: a damaged page makes it panic (its
// assertions, or the consistency walk it runs in a goroutine of its own at
// every writable open, where no recover can reach), and a file shorter
// than its pages makes the process die of SIGBUS. verifyBolt checks every
// offset against the file's length before it reads there, and walks the same pages bbolt's open walks, with the
// same checks (each page where its parent says, of the type it must be,
// referenced once, below the high-water mark, its keys in order), and
// more (every element inside its page, the file as long as its pages).
// A file it passes, bbolt opens without panicking.
//
// The format is bbolt's (go.etcd.io/bbolt, internal/common): page 0 and 1
// are meta pages, every page starts with a 16-byte header (id, flags,
// count, overflow), in the machine's byte order.

const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltPageHeader   = 16
	boltElementSize  = 16 // a branch element (pos, ksize, pgid) and a leaf element (flags, pos, ksize, vsize)
	boltBucketHeader = 16 // a bucket value: root pgid, sequence; an inline bucket's page follows
	boltBranchPage   = 0x01
	boltLeafPage     = 0x02
	boltMetaPage     = 0x04
	boltFreelistPage = 0x10
	boltBucketLeaf   = 0x01
	boltNoFreelist   = ^uint64(0)
	// boltMaxDepth bounds the walk: a B+tree of a few levels, buckets
	// nested a few deep. Deeper is a damaged file (a cycle the
	// reference check would catch later).
	boltMaxDepth = 64
)

var native = binary.NativeEndian

// boltStats is what a verified bbolt file holds.
type boltStats struct {
	Size      int64  `json:"size_bytes"`
	PageSize  int    `json:"page_size"`
	HighWater uint64 `json:"pages"` // pages in use (the meta's high-water mark)
	TxID      uint64 `json:"txid"`
	Buckets   int    `json:"buckets"`
	Keys      int    `json:"keys"`
}

// boltDamage is a bbolt file found damaged: what is wrong, where.
type boltDamage struct{ what string }

func (d *boltDamage) Error() string { return d.what }

func damaged(format string, args ...any) error {
	return &boltDamage{what: fmt.Sprintf(format, args...)}
}

// errBoltEmpty is a file of 0 bytes: bbolt would make it a new, empty
// database without a word.
var errBoltEmpty = errors.New("the file is empty (0 bytes)")

// verifyBolt verifies the bbolt file at path; a *boltDamage (or
// errBoltEmpty) when it is damaged, another error when it cannot be
// read. It never panics: a bug here on a file nobody foresaw is a
// damaged file too.
func verifyBolt(path string) (st boltStats, err error) {
	f, err := os.Open(path)
	if err != nil {
		return st, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, err
	}
	st.Size = fi.Size()
	if st.Size == 0 {
		return st, errBoltEmpty
	}
	if st.Size > 1<<46 {
		return st, damaged("%d bytes long", st.Size)
	}
	// The file is mapped read-only, and every offset is checked against
	// its length before it is read. Should it shrink meanwhile (nothing
	// else may open it: the data dir's lock is held), the fault is a
	// panic here (SetPanicOnFault), recovered as a damaged file.
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return st, fmt.Errorf("cannot map it: %w", err)
	}
	defer syscall.Munmap(data)
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = damaged("unreadable structure (%v)", r)
		}
	}()
	w := &boltWalker{data: data}
	w.st.Size = st.Size
	return w.verify()
}

type boltWalker struct {
	data  []byte
	psize int
	hwm   uint64
	seen  []uint64 // a bit per page
	st    boltStats
}

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readMeta reads the meta page at off; ok when its magic, version and
// checksum hold (bbolt's Meta.Validate).
func (w *boltWalker) readMeta(off int64) (m boltMeta, ok bool) {
	if off < 0 || off+boltPageHeader+64 > int64(len(w.data)) {
		return m, false
	}
	mb := w.data[off+boltPageHeader : off+boltPageHeader+64]
	h := fnv.New64a()
	h.Write(mb[:56])
	if native.Uint32(mb[0:]) != boltMagic || native.Uint32(mb[4:]) != boltVersion || native.Uint64(mb[56:]) != h.Sum64() {
		return m, false
	}
	return boltMeta{
		pageSize: native.Uint32(mb[8:]),
		root:     native.Uint64(mb[16:]),
		freelist: native.Uint64(mb[32:]),
		pgid:     native.Uint64(mb[40:]),
		txid:     native.Uint64(mb[48:]),
	}, true
}

func (w *boltWalker) verify() (boltStats, error) {
	size := int64(len(w.data))
	// The page size is the first valid meta's (bbolt's getPageSize:
	// page 0 first, then page 1 at every size bbolt could have used).
	m0, ok0 := w.readMeta(0)
	var m1 boltMeta
	var ok1 bool
	switch {
	case ok0:
		m1, ok1 = w.readMeta(int64(m0.pageSize))
	default:
		for i := 0; i <= 14; i++ {
			ps := int64(1024) << i
			if ps >= size {
				break
			}
			if m, ok := w.readMeta(ps); ok && int64(m.pageSize) == ps {
				m1, ok1 = m, true
				break
			}
		}
	}
	if !ok0 && !ok1 {
		return w.st, damaged("neither of its two meta pages is valid (not a bbolt file, or both overwritten)")
	}
	// bbolt uses the meta of the higher transaction if it is valid, else
	// the other one.
	m := m0
	if !ok0 || ok1 && m1.txid > m0.txid {
		m = m1
	}
	if m.pageSize < 512 || m.pageSize > 1<<24 || m.pageSize&(m.pageSize-1) != 0 {
		return w.st, damaged("its meta page gives an impossible page size %d", m.pageSize)
	}
	w.psize = int(m.pageSize)
	w.hwm = m.pgid
	w.st.PageSize, w.st.HighWater, w.st.TxID = w.psize, w.hwm, m.txid
	if size < 2*int64(w.psize) {
		return w.st, damaged("it is %d bytes long, shorter than its two meta pages", size)
	}
	if w.hwm < 3 || w.hwm > uint64(size)/uint64(w.psize) {
		if w.hwm >= 3 && w.hwm <= 1<<40 && uint64(size) < w.hwm*uint64(w.psize) {
			return w.st, damaged("truncated: its %d pages of %d bytes need %d bytes, the file has %d", w.hwm, w.psize, w.hwm*uint64(w.psize), size)
		}
		return w.st, damaged("its meta page gives an impossible page count %d", w.hwm)
	}
	w.seen = make([]uint64, (w.hwm+63)/64)
	w.mark(0)
	w.mark(1)
	if m.root < 2 || m.root >= w.hwm {
		return w.st, damaged("its root bucket is at page %d, outside its %d pages", m.root, w.hwm)
	}
	if _, err := w.walkTree(m.root, nil, nil, 0); err != nil {
		return w.st, err
	}
	if m.freelist != boltNoFreelist {
		if err := w.checkFreelist(m.freelist); err != nil {
			return w.st, err
		}
	}
	return w.st, nil
}

func (w *boltWalker) marked(id uint64) bool { return w.seen[id/64]&(1<<(id%64)) != 0 }
func (w *boltWalker) mark(id uint64)        { w.seen[id/64] |= 1 << (id % 64) }

// page returns page id with its overflow pages, after checking that it
// lies inside the file and below the high-water mark, says it is page id,
// is of the type wanted (0: branch or leaf), and was not reached before.
func (w *boltWalker) page(id uint64, want uint16) ([]byte, error) {
	if id < 2 || id >= w.hwm {
		return nil, damaged("a reference to page %d, outside its %d pages", id, w.hwm)
	}
	off := id * uint64(w.psize)
	hdr := w.data[off : off+boltPageHeader] // id < hwm <= len/psize
	if got := native.Uint64(hdr[0:]); got != id {
		return nil, damaged("page %d is overwritten (its header says page %d)", id, got)
	}
	flags, overflow := native.Uint16(hdr[8:]), uint64(native.Uint32(hdr[12:]))
	if want == 0 && flags != boltBranchPage && flags != boltLeafPage || want != 0 && flags != want {
		return nil, damaged("page %d has flags %#x where a %s page must be", id, flags, pageKind(want))
	}
	if overflow >= w.hwm-id {
		return nil, damaged("page %d runs %d pages past its %d pages", id, overflow, w.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if w.marked(i) {
			return nil, damaged("page %d is referenced twice", i)
		}
		w.mark(i)
	}
	return w.data[off : off+(overflow+1)*uint64(w.psize)], nil
}

func pageKind(flags uint16) string {
	switch flags {
	case boltBranchPage:
		return "branch"
	case boltLeafPage:
		return "leaf"
	case boltFreelistPage:
		return "freelist"
	}
	return "branch or leaf"
}

// pageElems checks page p's (a page of the file, or an inline bucket's)
// header and that its element array fits in it.
func pageElems(p []byte) (leaf bool, count int, ok bool) {
	if len(p) < boltPageHeader {
		return false, 0, false
	}
	flags, count := native.Uint16(p[8:]), int(native.Uint16(p[10:]))
	if flags != boltLeafPage && flags != boltBranchPage {
		return false, 0, false
	}
	return flags == boltLeafPage, count, boltPageHeader+count*boltElementSize <= len(p)
}

// elem decodes element i of page p, checking that its key and value lie
// inside p (pos counts from the element itself).
func elem(p []byte, leaf bool, i int) (key, value []byte, pgid uint64, flags uint32, ok bool) {
	at := boltPageHeader + i*boltElementSize
	e := p[at : at+boltElementSize]
	var pos, ksize, vsize uint64
	if leaf {
		flags = native.Uint32(e[0:])
		pos, ksize, vsize = uint64(native.Uint32(e[4:])), uint64(native.Uint32(e[8:])), uint64(native.Uint32(e[12:]))
	} else {
		pos, ksize = uint64(native.Uint32(e[0:])), uint64(native.Uint32(e[4:]))
		pgid = native.Uint64(e[8:])
	}
	start := uint64(at) + pos
	if start+ksize+vsize > uint64(len(p)) {
		return nil, nil, 0, 0, false
	}
	return p[start : start+ksize], p[start+ksize : start+ksize+vsize], pgid, flags, true
}

// walkTree walks the B+tree under page id: every key in [min, max) (nil:
// unbounded) and in order, as bbolt's key order check wants; it returns
// the subtree's largest key.
func (w *boltWalker) walkTree(id uint64, min, max []byte, depth int) ([]byte, error) {
	if depth > boltMaxDepth {
		return nil, damaged("page %d is nested %d deep", id, depth)
	}
	p, err := w.page(id, 0)
	if err != nil {
		return nil, err
	}
	leaf, count, ok := pageElems(p)
	if !ok {
		return nil, damaged("page %d: its %d elements do not fit in it", id, count)
	}
	if leaf {
		return w.leaf(p, count, func() string { return fmt.Sprintf("page %d", id) }, min, max, depth)
	}
	running := min
	var last []byte
	for i := range count {
		key, _, child, _, ok := elem(p, false, i)
		if !ok {
			return nil, damaged("page %d: element %d points past the end of the page", id, i)
		}
		if !keyInOrder(i, key, running, max) {
			return nil, damaged("page %d: key %d is out of order", id, i)
		}
		next := max
		if i+1 < count {
			if next, _, _, _, ok = elem(p, false, i+1); !ok {
				return nil, damaged("page %d: element %d points past the end of the page", id, i+1)
			}
		}
		if last, err = w.walkTree(child, key, next, depth+1); err != nil {
			return nil, err
		}
		running = last
	}
	return last, nil
}

// leaf checks a leaf page's (or an inline bucket's) elements, and walks
// the buckets among them.
func (w *boltWalker) leaf(p []byte, count int, where func() string, min, max []byte, depth int) ([]byte, error) {
	running := min
	for i := range count {
		key, value, _, flags, ok := elem(p, true, i)
		if !ok {
			return nil, damaged("%s: element %d points past the end of the page", where(), i)
		}
		if !keyInOrder(i, key, running, max) {
			return nil, damaged("%s: key %d is out of order", where(), i)
		}
		running = key
		if flags&boltBucketLeaf == 0 {
			w.st.Keys++
			continue
		}
		w.st.Buckets++
		if len(value) < boltBucketHeader {
			return nil, damaged("%s: bucket %q has a value of %d bytes, shorter than a bucket header", where(), key, len(value))
		}
		if root := native.Uint64(value); root != 0 {
			if _, err := w.walkTree(root, nil, nil, depth+1); err != nil {
				return nil, err
			}
			continue
		}
		inner := value[boltBucketHeader:]
		inWhere := func() string { return fmt.Sprintf("%s: inline bucket %q", where(), key) }
		leaf, n, ok := pageElems(inner)
		if !ok || !leaf {
			return nil, damaged("%s: not a leaf page that holds its elements", inWhere())
		}
		if depth > boltMaxDepth {
			return nil, damaged("%s: nested %d deep", inWhere(), depth)
		}
		if _, err := w.leaf(inner, n, inWhere, nil, nil, depth+1); err != nil {
			return nil, err
		}
	}
	if count == 0 {
		return nil, nil
	}
	key, _, _, _, _ := elem(p, true, count-1)
	return key, nil
}

// keyInOrder is bbolt's verifyKeyOrder: the first key at or above the
// parent's, every next one above the one before, all below max.
func keyInOrder(i int, key, prev, max []byte) bool {
	if prev != nil {
		if c := bytes.Compare(prev, key); c > 0 || i > 0 && c == 0 {
			return false
		}
	}
	return max == nil || bytes.Compare(key, max) < 0
}

// checkFreelist checks a synced freelist page: inside the file, of its
// type, listing pages that exist and that no bucket uses.
func (w *boltWalker) checkFreelist(id uint64) error {
	p, err := w.page(id, boltFreelistPage)
	if err != nil {
		return err
	}
	count, idx := uint64(native.Uint16(p[10:])), uint64(0)
	if count == 0xFFFF {
		if len(p) < boltPageHeader+8 {
			return damaged("freelist page %d: cut short", id)
		}
		count, idx = native.Uint64(p[boltPageHeader:]), 1
	}
	if count > uint64(len(p)) || boltPageHeader+(idx+count)*8 > uint64(len(p)) {
		return damaged("freelist page %d: %d entries do not fit in it", id, count)
	}
	for i := idx; i < idx+count; i++ {
		fid := native.Uint64(p[boltPageHeader+i*8:])
		if fid < 2 || fid >= w.hwm {
			return damaged("freelist page %d lists page %d, outside its %d pages", id, fid, w.hwm)
		}
		if w.marked(fid) && (fid < id || fid > id+uint64(len(p)/w.psize)-1) {
			return damaged("freelist page %d lists page %d, which a bucket uses", id, fid)
		}
	}
	return nil
}

// Damage says what is wrong with the bbolt file at path, or "" when it is
// sound or absent. Check a file before bbolt opens it: bbolt panics on
// some damage.
func Damage(path string) string {
	if _, err := verifyBolt(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return damageText(err)
	}
	return ""
}
