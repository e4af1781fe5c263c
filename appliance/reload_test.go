package appliance

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openbao/openbao/api/v2"
)

// servedSerial is the serial number of the certificate the listener shows.
func servedSerial(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// Reload: new certificates from the same files, a new audit device, the
// log level; an invalid config changes nothing.
func TestReload(t *testing.T) {
	log := &syncBuffer{}
	cfg := testConfig(t, log)
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	cfg.Listeners[0].TLSDisable = false
	cfg.Listeners[0].TLSCertFile, cfg.Listeners[0].TLSKeyFile = certFile, keyFile
	a := startNode(t, cfg)
	res := initAndUnseal(t, a)
	hostport := strings.TrimPrefix(a.APIAddr(), "https://")
	before := servedSerial(t, hostport)

	// New certificate in the same files (writeCert uses serial 1: bump it).
	writeCertSerial(t, dir, 2)
	auditFile := filepath.Join(dir, "audit.log")
	next := *cfg
	next.LogLevel = "debug"
	next.Audit = []AuditDevice{{Type: "file", Path: "file", Options: map[string]string{"file_path": auditFile}}}

	bad := next
	bad.NodeID = ""
	if err := a.Reload(&bad); err == nil {
		t.Fatal("an invalid config was applied")
	}
	if servedSerial(t, hostport) != before {
		t.Fatal("a refused reload changed the certificate")
	}

	if err := a.Reload(&next); err != nil {
		t.Fatal(err)
	}
	if after := servedSerial(t, hostport); after == before {
		t.Fatalf("the listener still serves certificate %s", before)
	}
	conf := api.DefaultConfig()
	conf.Address = a.APIAddr()
	conf.ConfigureTLS(&api.TLSConfig{Insecure: true})
	c, err := api.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(res.RootToken)
	waitFor(t, "the new audit device to log a request", func() bool {
		c.Auth().Token().LookupSelf()
		b, _ := os.ReadFile(auditFile)
		return strings.Contains(string(b), "auth/token/lookup-self")
	})
	if !a.logger.IsDebug() {
		t.Fatal("the log level was not raised to debug")
	}
}
