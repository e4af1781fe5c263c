package test

// The Omnibus cookbook's metrics: what the rendered scrape config and
// listeners let Prometheus (and others) read (see omnibus_test.go).

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

// scrape fetches the metrics as the rendered Prometheus scrape config
// says: scheme, target, metrics_path, params, tls_config.ca_file.
func scrape(t *testing.T, sc map[string]any) (int, string) {
	t.Helper()
	targets := sc["static_configs"].([]any)[0].(map[string]any)["targets"].([]any)
	params := sc["params"].(map[string]any)["format"].([]any)
	u := fmt.Sprintf("%s://%s%s?format=%s", sc["scheme"], targets[0], sc["metrics_path"], params[0])
	tr := &http.Transport{Proxy: nil}
	if tc, ok := sc["tls_config"].(map[string]any); ok {
		pem, err := os.ReadFile(tc["ca_file"].(string))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Get(u)
	if err != nil {
		t.Fatalf("scraping %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func onlyScrapeConfig(t *testing.T, n *omnibusNode) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, sc := range n.Report.ScrapeConfigs {
		if sc["job_name"] == "gitlab-secrets-appliance" {
			found = append(found, sc)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one gitlab-secrets-appliance scrape config, got %d in %v", len(found), n.Report.ScrapeConfigs)
	}
	return found[0]
}

// Metrics access (issue 18, item 8: "listening on all addresses with
// unauthenticated metrics reconsidered"). The API listener listens on every
// address (Runners and the other nodes reach it) and by default serves
// metrics only with a token; the bundled Prometheus scrapes a second
// listener, plain HTTP on loopback, that serves them without one. With a
// token file Prometheus scrapes the API listener with the token; the
// operator may let the API listener serve them without a token
// (unauthenticated_metrics_access) or turn the loopback listener off, and
// with neither there is no scrape config and a warning says why; without
// Prometheus on the node or with scraping off there is no scrape config.
// A metrics listener on another address than loopback is refused by the
// appliance (plain HTTP).
func TestOmnibusMetricsAccess(t *testing.T) {
	needRuby(t)
	bin := harness.Binary(t)
	const token = "/var/opt/gitlab/prometheus/secrets-appliance-token"
	for _, tc := range []struct {
		name, rb string
		// unauthenticated: the API listener's unauthenticated_metrics_access;
		// metricsListener: listener[1] exists; target: "metrics", "api" or
		// "" (no scrape config).
		unauthenticated, metricsListener bool
		target                           string
		authorization                    bool
		warning                          string
	}{
		{"default", "", false, true, "metrics", false, ""},
		{"token", "gitlab_secrets_appliance['prometheus_scrape_credentials_file'] = '" + token + "'\n", false, true, "api", true, ""},
		{"opt in", "gitlab_secrets_appliance['unauthenticated_metrics_access'] = true\ngitlab_secrets_appliance['metrics_listen_address'] = false\n", true, false, "api", false, ""},
		{"no metrics listener", "gitlab_secrets_appliance['metrics_listen_address'] = false\n", false, false, "", false, "Prometheus does not scrape the secrets appliance"},
		{"no prometheus", "prometheus['enable'] = false\n", false, true, "", false, ""},
		{"scrape off", "gitlab_secrets_appliance['prometheus_scrape_enable'] = false\n", false, true, "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newOmnibusNode(t, bin, "gitlab-1.example.com")
			listen := harness.FreeAddr(t, "127.0.0.1")
			n.mustReconfigure(t, n.baseRB()+fmt.Sprintf("gitlab_secrets_appliance['listen_address'] = %q\ngitlab_secrets_appliance['tls_disable'] = true\n", listen)+tc.rb)
			ls := n.renderedConfig(t)["listener"].([]any)
			if l := ls[0].(map[string]any); l["address"] != listen || l["unauthenticated_metrics_access"] != tc.unauthenticated {
				t.Errorf("listener[0] = %v, want %s with unauthenticated_metrics_access %v", l, listen, tc.unauthenticated)
			}
			if got := len(ls) == 2; got != tc.metricsListener {
				t.Fatalf("listeners: %v", ls)
			} else if got {
				want := map[string]any{"address": n.MetricsAddr, "tls_disable": true, "tls_min_version": "tls12", "unauthenticated_metrics_access": true}
				if !reflect.DeepEqual(ls[1], jsonRoundTrip(t, want)) {
					t.Errorf("listener[1] = %v, want %v", ls[1], want)
				}
			}
			if got := len(n.Report.ScrapeConfigs) == 1; got != (tc.target != "") {
				t.Fatalf("scrape configs: %v", n.Report.ScrapeConfigs)
			}
			if tc.target != "" {
				sc := n.Report.ScrapeConfigs[0]
				target := map[string]string{"metrics": n.MetricsAddr, "api": listen}[tc.target]
				if !reflect.DeepEqual(sc["static_configs"], jsonRoundTrip(t, []any{map[string]any{"targets": []any{target}}})) {
					t.Errorf("scrape target: %v, want %s", sc["static_configs"], target)
				}
				a, _ := sc["authorization"].(map[string]any)
				if (a != nil) != tc.authorization || (a != nil && a["credentials_file"] != token) {
					t.Errorf("authorization: %v", a)
				}
			}
			if tc.warning != "" && !slices.ContainsFunc(n.Report.Warnings, func(w string) bool { return strings.Contains(w, tc.warning) }) {
				t.Errorf("warnings %q lack %q", n.Report.Warnings, tc.warning)
			}
			n.validate(t)
		})
	}
	// An API listener that demands client certificates: the loopback
	// listener, which demands none, only when gitlab.rb asks for it.
	t.Run("client certificates", func(t *testing.T) {
		n := newOmnibusNode(t, bin, "gitlab-1.example.com")
		ssl := n.path("etc/gitlab/ssl")
		ca := harness.NewCA(t)
		caFile := ca.WriteTo(t, ssl)
		certFile, keyFile := ca.IssueIn(t, ssl, "localhost", "127.0.0.1")
		rb := strings.Replace(n.baseRB(), "gitlab_secrets_appliance['metrics_listen_address']", "# gitlab_secrets_appliance['metrics_listen_address']", 1) +
			fmt.Sprintf("gitlab_secrets_appliance['listen_address'] = %q\ngitlab_secrets_appliance['tls_cert_file'] = %q\n"+
				"gitlab_secrets_appliance['tls_key_file'] = %q\ngitlab_secrets_appliance['tls_client_ca_file'] = %q\n"+
				"gitlab_secrets_appliance['tls_require_client_cert'] = true\n", harness.FreeAddr(t, "127.0.0.1"), certFile, keyFile, caFile)
		n.mustReconfigure(t, rb)
		if ls := n.renderedConfig(t)["listener"].([]any); len(ls) != 1 || len(n.Report.ScrapeConfigs) != 0 ||
			!slices.ContainsFunc(n.Report.Warnings, func(w string) bool {
				return strings.Contains(w, "the loopback metrics listener (plain HTTP, no client certificate) is not rendered")
			}) {
			t.Errorf("with client certificates by default: listeners %v, scrape configs %v, warnings %q", ls, n.Report.ScrapeConfigs, n.Report.Warnings)
		}
		n.validate(t)
		n.mustReconfigure(t, rb+fmt.Sprintf("gitlab_secrets_appliance['metrics_listen_address'] = %q\n", n.MetricsAddr))
		if ls := n.renderedConfig(t)["listener"].([]any); len(ls) != 2 || len(n.Report.ScrapeConfigs) != 1 {
			t.Errorf("with client certificates and metrics_listen_address: listeners %v, scrape configs %v", ls, n.Report.ScrapeConfigs)
		}
	})
	t.Run("metrics listener on all addresses", func(t *testing.T) {
		n := newOmnibusNode(t, bin, "gitlab-1.example.com")
		listen := harness.FreeAddr(t, "127.0.0.1")
		code, _, errOut := n.reconfigure(t, n.baseRB()+fmt.Sprintf("gitlab_secrets_appliance['listen_address'] = %q\ngitlab_secrets_appliance['tls_disable'] = true\n", listen)+
			"gitlab_secrets_appliance['metrics_listen_address'] = '0.0.0.0:8202'\n")
		if code == 0 || !strings.Contains(errOut, "plain HTTP is allowed on loopback addresses only") {
			t.Fatalf("reconfigure with metrics_listen_address 0.0.0.0:8202: exit %d, want the appliance's refusal:\n%s", code, errOut)
		}
	})
}
