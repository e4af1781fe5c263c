package appliance

import (
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/client"
	"gitlab.com/gitlab-org/gitlab-secrets-appliance/fips"
)

// checkInitFIPS refuses PGP keys in an init request in FIPS mode.
func checkInitFIPS(r client.InitRequest) error {
	if err := fips.CheckPGP("pgp_keys", r.PGPKeys); err != nil {
		return err
	}
	return fips.CheckPGP("recovery_pgp_keys", r.RecoveryPGPKeys)
}
