package test

import (
	"os"
	"testing"

	"gitlab.com/gitlab-org/gitlab-secrets-appliance/test/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBuild()
	os.Exit(code)
}
