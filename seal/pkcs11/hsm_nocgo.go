//go:build !cgo

package pkcs11

import (
	"context"
	"fmt"
)

// PKCS#11 modules are C libraries: a build without cgo (no C compiler on
// the build machine) cannot load one. Such a build still runs with Shamir
// shares; an HSM configured for it fails with ErrLibrary.

// HSM is never opened in a build without cgo.
type HSM struct{}

// Open fails: this build has no PKCS#11 support.
func Open(context.Context, Config) (*HSM, error) {
	return nil, fmt.Errorf("%w: this binary was built without cgo, so it has no PKCS#11 support; rebuild with a C compiler installed (CGO_ENABLED=1)", ErrLibrary)
}

func (*HSM) Wrap(context.Context, []byte) ([]byte, error)   { return nil, ErrUnavailable }
func (*HSM) Unwrap(context.Context, []byte) ([]byte, error) { return nil, ErrUnavailable }
func (*HSM) Check(context.Context) error                    { return ErrUnavailable }
func (*HSM) Close() error                                   { return nil }
func (*HSM) Describe() string                               { return "no PKCS#11 support" }
