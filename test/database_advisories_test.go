package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// The schema a dynamic user creates to steer 2.4.0's default revocation:
// pasted unquoted, it ends the REVOKE and drops a table of the database's
// owner as the connection's (superuser) user.
const craftedSchema = `public FROM PUBLIC; DROP TABLE public.victim; --`

// revokeStatements are what an operator gives a PostgreSQL role instead
// of the default revocation (and what the filter's refusal suggests).
var revokeStatements = []string{`REASSIGN OWNED BY "{{name}}" TO CURRENT_USER; DROP OWNED BY "{{name}}"; DROP ROLE IF EXISTS "{{name}}";`}

// CVE-2026-39946 (GHSA-6vgr-cp5c-ffx3): a database role on a PostgreSQL
// connection without revocation_statements is refused (400 naming the
// advisory and the fix); with them it is accepted, and so is a role on a
// connection of another plugin without them. Against a real PostgreSQL
// server (when its binaries are on the machine), a dynamic user of the
// role with revocation_statements creates the crafted schema; revoking
// its lease drops the user and nothing else. On OpenBao 2.4.0 as shipped
// the role without statements was stored, and revoking its user ran the
// user's SQL as the superuser (the victim table was dropped).
func TestPostgresRevocationAdvisoryClosed(t *testing.T) {
	bin := harness.Binary(t)
	tr := &harness.Transcript{}
	addr, res := startActive(t, tr, bin, "--shares", "3", "--threshold", "2")
	root := res.RootToken
	hc := &http.Client{Timeout: time.Minute}
	v1 := addr + "/v1/"
	must := func(method, path, token string, body any) string {
		t.Helper()
		code, out := call(t, hc, method, v1+path, token, body)
		if code/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, code, out)
		}
		return out
	}
	pg := startPostgres(t)
	must("POST", "sys/mounts/database", root, map[string]any{"type": "database"})
	conn := map[string]any{
		"plugin_name": "postgresql-database-plugin", "allowed_roles": "*",
		"connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:1/postgres?sslmode=disable",
		"username":       "postgres", "password": "unused", "verify_connection": false,
	}
	if pg != nil {
		conn["connection_url"] = fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
		conn["verify_connection"] = true
	}
	must("POST", "database/config/pg", root, conn)
	must("POST", "database/config/cache", root, map[string]any{
		"plugin_name": "valkey-database-plugin", "allowed_roles": "*", "host": "127.0.0.1", "port": 1,
		"username": "default", "password": "unused", "verify_connection": false,
	})
	creation := []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT CREATE ON DATABASE postgres TO "{{name}}";`}

	naive := map[string]any{"db_name": "pg", "creation_statements": creation, "default_ttl": "1h"}
	naiveStored := false
	for _, body := range []map[string]any{naive, {"db_name": "pg", "creation_statements": creation, "revocation_statements": []string{}}, {"db_name": "pg", "creation_statements": creation, "revocation_statements": " "}} {
		code, out := call(t, hc, "POST", v1+"database/roles/naive", root, body)
		naiveStored = naiveStored || code/100 == 2
		if code != http.StatusBadRequest || !strings.Contains(out, "CVE-2026-39946") || !strings.Contains(out, "revocation_statements") {
			t.Errorf("a PostgreSQL role with revocation_statements %v: %d %.300s, want 400 naming CVE-2026-39946 and revocation_statements", body["revocation_statements"], code, strings.TrimSpace(out))
		}
	}
	if code, out := callForm(t, hc, v1+"database/roles/naive-form", root, "db_name=pg&creation_statements=x"); code != http.StatusBadRequest || !strings.Contains(out, "CVE-2026-39946") {
		t.Errorf("a PostgreSQL role without revocation_statements, as a form: %d %.300s, want 400", code, strings.TrimSpace(out))
	}
	must("POST", "database/roles/safe", root, map[string]any{"db_name": "pg", "creation_statements": creation, "revocation_statements": revokeStatements, "default_ttl": "1h"})
	must("POST", "database/roles/safe", root, map[string]any{"default_ttl": "30m"}) // an update keeps the stored statements
	must("POST", "database/roles/cached", root, map[string]any{"db_name": "cache", "creation_statements": []string{`["~*", "+@read"]`}})

	// The stated limit: a token that may write roles but not read the
	// connection cannot be checked, and must give the statements.
	writer := makeToken(t, hc, addr, root, "db-role-writer", `path "database/roles/*" { capabilities = ["create", "update"] }`)
	if code, out := call(t, hc, "POST", v1+"database/roles/other", writer, naive); code != http.StatusBadRequest || !strings.Contains(out, "cannot be read with this token") {
		t.Errorf("a role without statements by a token that cannot read the connection: %d %.300s, want 400", code, strings.TrimSpace(out))
	}
	must("POST", "database/roles/other", writer, map[string]any{"db_name": "pg", "creation_statements": creation, "revocation_statements": revokeStatements})

	if pg == nil {
		t.Log("no PostgreSQL server on this machine (initdb, postgres): the role writes were checked, the revocation itself was not played")
		return
	}
	pg.psql(t, "postgres", "", "CREATE TABLE public.victim (x int)")
	role := "safe"
	if naiveStored {
		role = "naive" // OpenBao 2.4.0 as shipped: play the attack
	}
	var creds struct {
		LeaseID string `json:"lease_id"`
		Data    struct {
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"data"`
	}
	if out := must("GET", "database/creds/"+role, root, nil); json.Unmarshal([]byte(out), &creds) != nil || creds.Data.Username == "" {
		t.Fatalf("credentials of %s: %s", role, out)
	}
	q := `"` + strings.ReplaceAll(craftedSchema, `"`, `""`) + `"`
	pg.psql(t, creds.Data.Username, creds.Data.Password, "CREATE SCHEMA "+q+"; CREATE TABLE "+q+".t (c int)")
	code, out := call(t, hc, "PUT", v1+"sys/leases/revoke", root, map[string]any{"lease_id": creds.LeaseID})
	if got := pg.psql(t, "postgres", "", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'victim'"); got != "1" {
		t.Errorf("revoking %s's user (%d %.200s) dropped public.victim: the user's SQL ran as the superuser", role, code, strings.TrimSpace(out))
	}
	if code/100 != 2 {
		t.Errorf("revoking %s's user: %d %.300s", role, code, strings.TrimSpace(out))
	}
	if got := pg.psql(t, "postgres", "", "SELECT count(*) FROM pg_roles WHERE rolname = '"+creds.Data.Username+"'"); got != "0" {
		t.Errorf("the dynamic user outlived its revoked lease (%s roles)", got)
	}
}

// postgres is a throwaway PostgreSQL server on loopback (trust auth).
type postgres struct {
	port int
}

// pgBinary finds a PostgreSQL program on the PATH or where Debian's
// postgresql package puts it (/usr/lib/postgresql/<version>/bin, not on
// the PATH), the newest version first.
func pgBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(found) == 0 {
		return "", exec.ErrNotFound
	}
	slices.SortFunc(found, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(a))))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(b))))
		return vb - va
	})
	return found[0], nil
}

// startPostgres starts a PostgreSQL server in a temp dir, or returns nil
// when its binaries are not on the machine. As root it runs as the
// postgres user (PostgreSQL refuses root).
func startPostgres(t *testing.T) *postgres {
	t.Helper()
	initdb, err1 := pgBinary("initdb")
	server, err2 := pgBinary("postgres")
	if _, err3 := pgBinary("psql"); err1 != nil || err2 != nil || err3 != nil {
		return nil
	}
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "gsa-postgres-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	as := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		return cmd
	}
	data := filepath.Join(dir, "data")
	if out, err := as(initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	_, portStr, _ := strings.Cut(harness.FreeAddr(t, "127.0.0.1"), ":")
	port, _ := strconv.Atoi(portStr)
	logBuf := &harness.Buffer{}
	cmd := as(server, "-D", data, "-k", dir, "-c", "listen_addresses=127.0.0.1", "-p", portStr)
	cmd.Stdout, cmd.Stderr = logBuf, logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	pg := &postgres{port: port}
	harness.Eventually(t, time.Minute, "PostgreSQL to accept connections", func() bool {
		select {
		case <-done:
			t.Fatalf("postgres exited:\n%s", logBuf)
		default:
		}
		_, err := pg.try("postgres", "", "SELECT 1")
		return err == nil
	})
	return pg
}

func (pg *postgres) try(user, password, sql string) (string, error) {
	cmd := exec.Command("psql", "-h", "127.0.0.1", "-p", strconv.Itoa(pg.port), "-U", user, "-d", "postgres", "-tAq", "-v", "ON_ERROR_STOP=1", "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=5")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// psql runs sql as user and returns its output (tuples only).
func (pg *postgres) psql(t *testing.T, user, password, sql string) string {
	t.Helper()
	out, err := pg.try(user, password, sql)
	if err != nil {
		t.Fatalf("psql as %s: %v", user, err)
	}
	return out
}
