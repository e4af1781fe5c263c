package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
)

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

var (
	logLevels  = []string{"trace", "debug", "info", "warn", "error"}
	logFormats = []string{"standard", "json"}
	tlsVersion = []string{"tls12", "tls13"}
	auditTypes = []string{"file", "syslog", "socket"}
)

// Validate checks the configuration and reports every problem at once in a
// *ConfigError, each naming the key as written in the config file. It
// reads the files the config names (certificates) and looks at the data
// directory, but changes nothing.
func (c *Config) Validate() error {
	v := &validator{fips: fips.Enabled()}
	c.validate(v)
	if len(v.problems) == 0 {
		return nil
	}
	return &ConfigError{Problems: v.problems}
}

type validator struct {
	problems []Problem
	fips     bool // FIPS 140-3 mode: validateFIPS's rules apply
}

func (v *validator) add(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
}

func (c *Config) validate(v *validator) {
	switch {
	case c.NodeID == "":
		v.add("node_id", "missing; set a name for this node, unique in the cluster (e.g. the host name)")
	case !nodeIDPattern.MatchString(c.NodeID):
		v.add("node_id", "%q is not a valid node id: use 1-64 letters, digits, '.', '_' or '-'", c.NodeID)
	}
	v.dataDir("data_dir", c.DataDir)
	v.url("api_addr", c.APIAddr, "http", "https")
	v.url("cluster_addr", c.ClusterAddr, "https")
	if !slices.Contains(logLevels, c.LogLevel) {
		v.add("log_level", "%q is not a log level; use one of %v", c.LogLevel, logLevels)
	}
	if !slices.Contains(logFormats, c.LogFormat) {
		v.add("log_format", "%q is not a log format; use one of %v", c.LogFormat, logFormats)
	}
	if len(c.Listeners) == 0 {
		v.add("listener", "missing; configure at least one API listener")
	}
	seen := map[string]string{}
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listener[%d]", i)
		l.validate(v, key)
		if prev, dup := seen[l.Address]; dup && l.Address != "" {
			v.add(key+".address", "%q is already used by %s", l.Address, prev)
		}
		seen[l.Address] = key
	}
	if c.Cluster != nil && c.Cluster.Address != "" {
		if v.hostPort("cluster.address", c.Cluster.Address) {
			if prev, dup := seen[c.Cluster.Address]; dup {
				v.add("cluster.address", "%q is already used by %s; the cluster port must differ from the API port", c.Cluster.Address, prev)
			}
		}
	}
	if c.Raft != nil {
		c.Raft.validate(v)
	}
	paths := map[string]bool{}
	for i, a := range c.Audit {
		key := fmt.Sprintf("audit[%d]", i)
		a.validate(v, key)
		if paths[a.Path] {
			v.add(key+".path", "%q is used by another audit device; give each a distinct path", a.Path)
		}
		paths[a.Path] = true
	}
	if t := c.Telemetry; t != nil && t.PrometheusRetentionTime != "" {
		if d, err := time.ParseDuration(t.PrometheusRetentionTime); err != nil || d <= 0 {
			v.add("telemetry.prometheus_retention_time", "%q is not a positive duration such as \"24h\"", t.PrometheusRetentionTime)
		}
	}
	if c.Seal != nil {
		c.Seal.validate(v)
	}
	if c.GitLab != nil {
		c.GitLab.validate(v)
	}
	if c.Geo != nil {
		c.Geo.validate(v, c)
	}
	if c.Snapshot != nil {
		c.Snapshot.validate(v, c.DataDir)
	}
	c.validateFIPS(v)
}

func (s *Seal) validate(v *validator) {
	if s.Shamir == nil && s.PKCS11 == nil {
		v.add("seal", "no mechanism: configure a \"pkcs11\" block, a \"shamir\" block, or both")
	}
	if sh := s.Shamir; sh != nil {
		if sh.Shares < 1 || sh.Shares > 255 {
			v.add("seal.shamir.shares", "%d is out of range; use 1 to 255", sh.Shares)
		}
		if sh.Threshold < 1 || sh.Threshold > sh.Shares {
			v.add("seal.shamir.threshold", "%d is out of range; use 1 to shares (%d)", sh.Threshold, sh.Shares)
		}
		if sh.Shares > 1 && sh.Threshold == 1 {
			v.add("seal.shamir.threshold", "1 of %d shares would let any single share unseal; use at least 2", sh.Shares)
		}
	}
	p := s.PKCS11
	if p == nil {
		return
	}
	if p.Library == "" {
		v.add("seal.pkcs11.library", "missing; set the path of the token's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so")
	} else {
		v.readable("seal.pkcs11.library", p.Library)
	}
	switch {
	case p.TokenLabel == "" && p.Slot == nil:
		v.add("seal.pkcs11", "no token: set token_label (or slot)")
	case p.TokenLabel != "" && p.Slot != nil:
		v.add("seal.pkcs11.slot", "set either token_label or slot, not both")
	case p.Slot != nil && *p.Slot < 0:
		v.add("seal.pkcs11.slot", "%d is not a slot number", *p.Slot)
	}
	if p.KeyLabel == "" {
		v.add("seal.pkcs11.key_label", "missing; set the label of the AES-256 key on the token that wraps the seal key")
	}
	switch {
	case p.PINFile == "" && p.PINEnv == "":
		v.add("seal.pkcs11", "no PIN: set pin_file (a file only this user can read) or pin_env (the name of a variable holding it)")
	case p.PINFile != "" && p.PINEnv != "":
		v.add("seal.pkcs11.pin_env", "set either pin_file or pin_env, not both")
	case p.PINFile != "":
		if v.readable("seal.pkcs11.pin_file", p.PINFile) {
			if st, err := os.Stat(p.PINFile); err == nil && st.Mode().Perm()&0o037 != 0 {
				v.add("seal.pkcs11.pin_file", "%s has unsafe permissions %04o: the group may read it at most, others nothing; run chmod 0600 %s", p.PINFile, st.Mode().Perm(), p.PINFile)
			}
		}
	case strings.HasPrefix(p.PINEnv, "BAO_") || strings.HasPrefix(p.PINEnv, "VAULT_"):
		v.add("seal.pkcs11.pin_env", "%q is removed from the environment at start (BAO_* and VAULT_* are OpenBao's); use another name", p.PINEnv)
	case os.Getenv(p.PINEnv) == "":
		v.add("seal.pkcs11.pin_env", "the variable %s is not set or empty", p.PINEnv)
	}
}

func (l Listener) validate(v *validator, key string) {
	if l.Address == "" {
		v.add(key+".address", "missing; set host:port to listen on, e.g. \"0.0.0.0:8200\"")
	} else if v.hostPort(key+".address", l.Address) && l.TLSDisable && !isLoopback(l.Address) {
		v.add(key+".tls_disable", "plain HTTP is allowed on loopback addresses only; %q is not one: set tls_cert_file and tls_key_file", l.Address)
	}
	if !slices.Contains(tlsVersion, l.TLSMinVersion) && !v.fipsRefusesTLS(l.TLSMinVersion) {
		v.add(key+".tls_min_version", "%q is not supported; use one of %v", l.TLSMinVersion, tlsVersion)
	}
	if l.TLSDisable {
		return
	}
	switch {
	case l.TLSCertFile == "" && l.TLSKeyFile == "":
		v.add(key, "no TLS certificate: set tls_cert_file and tls_key_file, or tls_disable = true on a loopback address")
	case l.TLSCertFile == "":
		v.add(key+".tls_cert_file", "missing; tls_key_file is set, so the certificate is needed too")
	case l.TLSKeyFile == "":
		v.add(key+".tls_key_file", "missing; tls_cert_file is set, so its private key is needed too")
	default:
		certOK := v.readable(key+".tls_cert_file", l.TLSCertFile)
		keyOK := v.readable(key+".tls_key_file", l.TLSKeyFile) && v.privateKey(key+".tls_key_file", l.TLSKeyFile)
		if certOK && keyOK {
			if _, err := tls.LoadX509KeyPair(l.TLSCertFile, l.TLSKeyFile); err != nil {
				v.add(key+".tls_cert_file", "%s and %s are not a usable certificate and key pair: %v", l.TLSCertFile, l.TLSKeyFile, err)
			}
		}
	}
	if l.TLSClientCAFile != "" && v.readable(key+".tls_client_ca_file", l.TLSClientCAFile) {
		if _, err := ReadCAPool(l.TLSClientCAFile); err != nil {
			v.add(key+".tls_client_ca_file", "%v", err)
		}
	}
	if l.TLSRequireClientCert && l.TLSClientCAFile == "" {
		v.add(key+".tls_require_client_cert", "needs tls_client_ca_file to verify client certificates against")
	}
	for j, cidr := range l.XForwardedForAuthorizedAddrs {
		if _, _, err := net.ParseCIDR(cidr); err != nil && net.ParseIP(cidr) == nil {
			v.add(fmt.Sprintf("%s.x_forwarded_for_authorized_addrs[%d]", key, j), "%q is neither an IP address nor a CIDR", cidr)
		}
	}
}

func (r *Raft) validate(v *validator) {
	if r.HeartbeatTimeout != "" {
		lease := time.Duration(max(r.PerformanceMultiplier, 1)) * 500 * time.Millisecond
		if d, err := time.ParseDuration(r.HeartbeatTimeout); err != nil {
			v.add("raft.heartbeat_timeout", "%q is not a duration (e.g. \"500ms\", \"2s\")", r.HeartbeatTimeout)
		} else if d < lease || d > time.Minute {
			v.add("raft.heartbeat_timeout", "%s is out of range; use %s (Raft's leader lease at performance_multiplier %d) to 1m", d, lease, r.PerformanceMultiplier)
		}
	}
	if r.PerformanceMultiplier < 1 || r.PerformanceMultiplier > 10 {
		v.add("raft.performance_multiplier", "%d is out of range; use 1 (fastest failover) to 10", r.PerformanceMultiplier)
	}
	if r.NonVoter && len(r.RetryJoin) == 0 {
		v.add("raft.non_voter", "a non-voter must join an existing cluster: add a retry_join block")
	}
	for i, j := range r.RetryJoin {
		key := fmt.Sprintf("raft.retry_join[%d]", i)
		if j.LeaderAPIAddr == "" {
			v.add(key+".leader_api_addr", "missing; set the API URL of a node to join through")
		} else {
			v.url(key+".leader_api_addr", j.LeaderAPIAddr, "http", "https")
		}
		for _, f := range [][2]string{
			{"leader_ca_cert_file", j.LeaderCACertFile},
			{"leader_client_cert_file", j.LeaderClientCertFile},
			{"leader_client_key_file", j.LeaderClientKeyFile},
		} {
			if f[1] != "" && v.readable(key+"."+f[0], f[1]) && f[0] == "leader_client_key_file" {
				v.privateKey(key+"."+f[0], f[1])
			}
		}
	}
}

func (a AuditDevice) validate(v *validator, key string) {
	if !slices.Contains(auditTypes, a.Type) {
		v.add(key+".type", "%q is not an audit device type; use one of %v", a.Type, auditTypes)
		return
	}
	switch a.Type {
	case "file":
		p := a.Options["file_path"]
		switch {
		case p == "":
			v.add(key+".options.file_path", "missing; a file audit device needs the log file's path (or \"stdout\")")
		case p != "stdout" && p != "discard":
			dir := filepath.Dir(p)
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				v.add(key+".options.file_path", "directory %s does not exist; create it first", dir)
			}
		}
	case "socket":
		if a.Options["address"] == "" {
			v.add(key+".options.address", "missing; a socket audit device needs host:port to send to")
		}
	}
}

// dataDir accepts a directory only this user can write and nobody else can
// read (Raft's files hold the encrypted barrier and, in dev mode, keys), or
// a missing one whose parent exists (Start creates it 0700).
func (v *validator) dataDir(key, dir string) {
	if dir == "" {
		v.add(key, "missing; set the directory that holds this node's Raft data")
		return
	}
	st, err := os.Stat(dir)
	switch {
	case err == nil && !st.IsDir():
		v.add(key, "%s is not a directory", dir)
	case err == nil && st.Mode().Perm()&0o027 != 0:
		v.add(key, "%s has unsafe permissions %04o: others must have no access and the group no write access; run chmod 0700 %s", dir, st.Mode().Perm(), dir)
	case err == nil:
	case os.IsNotExist(err):
		parent := filepath.Dir(filepath.Clean(dir))
		if pst, perr := os.Stat(parent); perr != nil || !pst.IsDir() {
			v.add(key, "%s does not exist and neither does its parent %s; create the parent directory", dir, parent)
		}
	default:
		v.add(key, "cannot inspect %s: %v", dir, PathCause(err))
	}
}

// readable accepts a regular file this process can read. Anything else
// (a directory, /dev/zero, a FIFO) would fail, block or never end when
// read in full.
func (v *validator) readable(key, path string) bool {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		v.add(key, "%s is a directory, not a file", path)
		return false
	} else if err == nil && !st.Mode().IsRegular() {
		v.add(key, "%s is %s, not a regular file; give the path of a file", path, fileKind(st.Mode()))
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		v.add(key, "cannot read %s: %v", path, PathCause(err))
		return false
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 1)); err != nil {
		v.add(key, "cannot read %s: %v", path, err)
		return false
	}
	return true
}

// privateKey refuses a private key file that others can access or the
// group can write; the group may read it (0640, e.g. with ssl-cert).
func (v *validator) privateKey(key, path string) bool {
	st, err := os.Stat(path)
	if err != nil {
		v.add(key, "cannot inspect %s: %v", path, PathCause(err))
		return false
	}
	if perm := st.Mode().Perm(); perm&0o037 != 0 {
		v.add(key, "%s holds a private key but has unsafe permissions %04o: others must have no access and the group read access at most; run chmod 0600 %s (or chmod 0640 to share it with a group)", path, perm, path)
		return false
	}
	return true
}

// fileKind names what a path that is not a regular file is.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0:
		return "a device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "a special file"
}

func (v *validator) hostPort(key, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(key, "%q is not host:port: %v", addr, stripAddrErr(err))
		return false
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.add(key, "%q has an invalid port %q", addr, port)
		return false
	}
	if host != "" && net.ParseIP(host) == nil {
		if _, err := net.LookupHost(host); err != nil {
			v.add(key, "host %q in %q does not resolve; use an IP address or a resolvable name", host, addr)
			return false
		}
	}
	return true
}

func (v *validator) url(key, raw string, schemes ...string) {
	if raw == "" {
		return
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		v.add(key, "%q is not a URL such as \"https://gitlab-1.example.com:8200\"", raw)
		return
	}
	if !slices.Contains(schemes, u.Scheme) {
		v.add(key, "%q has scheme %q; use %v", raw, u.Scheme, schemes)
		return
	}
	if u.Port() == "" {
		v.add(key, "%q has no port", raw)
	}
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func stripAddrErr(err error) string {
	if ae, ok := err.(*net.AddrError); ok {
		return ae.Err
	}
	return err.Error()
}
