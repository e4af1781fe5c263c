package appliance

// Version is the appliance's version, set at build time with
// -ldflags "-X gitlab.com/gitlab-org/gitlab-secrets-appliance/appliance.Version=...".
var Version = "0.1.0-dev"

// OpenBaoVersion is the release of the embedded OpenBao server. go.mod pins
// the root module at v0.0.0-20250828202315-f9407a27fbee, which is v2.4.0;
// the Makefile also stamps it into OpenBao's own version package (what
// sys/seal-status reports).
const OpenBaoVersion = "2.4.0"
