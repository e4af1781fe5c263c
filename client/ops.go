package client

// InitRequest says how to initialize a cluster. Zero values take the
// config's seal.shamir defaults; recovery keys default to 5 of 3.
type InitRequest struct {
	Shares            int      `json:"shares"`
	Threshold         int      `json:"threshold"`
	PGPKeys           []string `json:"pgp_keys,omitempty"`
	RecoveryShares    int      `json:"recovery_shares"`
	RecoveryThreshold int      `json:"recovery_threshold"`
	RecoveryPGPKeys   []string `json:"recovery_pgp_keys,omitempty"`
}

// InitResult is handed out exactly once, at init.
type InitResult struct {
	// Mechanisms enrolled: "pkcs11", "shamir".
	Mechanisms []string `json:"mechanisms"`
	// UnsealShares are the operators' Shamir shares of the seal key
	// (base64; PGP-encrypted if keys were given). Any UnsealThreshold of
	// them unseal every node when the HSM cannot.
	UnsealShares    []string `json:"unseal_shares,omitempty"`
	UnsealThreshold int      `json:"unseal_threshold,omitempty"`
	// RecoveryKeys are OpenBao's recovery keys: they never unseal; they
	// authorize generate-root and rekey.
	RecoveryKeys      []string `json:"recovery_keys"`
	RecoveryThreshold int      `json:"recovery_threshold"`
	RootToken         string   `json:"root_token"`
	// GitLabBootstrap is "applied", or why not, when the config has a
	// gitlab block.
	GitLabBootstrap string `json:"gitlab_bootstrap,omitempty"`
}

// UnsealProgress is where an unseal attempt stands after a share.
type UnsealProgress struct {
	Sealed    bool `json:"sealed"`
	Progress  int  `json:"progress"`
	Threshold int  `json:"threshold"`
	// Recovered: the shares recovered the seal key; a node still joining
	// its cluster unseals as soon as it has joined.
	Recovered bool `json:"recovered"`
}

// RestartRequest is the body of POST /appliance/v1/restart (it may be
// empty).
type RestartRequest struct {
	// HandOver lets the active node of a cluster with other voters
	// restart: it first hands its leadership to a caught-up voter and
	// waits until that voter is the active node.
	HandOver bool `json:"hand_over"`
}

// RestartResponse is the answer to an accepted restart.
type RestartResponse struct {
	NodeID     string `json:"node_id"`
	Restarting bool   `json:"restarting"`
	// HandedOver: this node was the active node and handed its
	// leadership over before it stopped.
	HandedOver bool `json:"handed_over,omitempty"`
}

// SealChange asks for a change of the seal mechanisms. A token with sudo
// on sys/appliance/seal (appliance.SealPolicyPath) starts it; a quorum of
// the current Shamir shares (or of OpenBao's recovery keys) authorizes
// it; a quorum of the new shares, given back, commits it (see package
// seal).
type SealChange struct {
	Mechanism string   `json:"mechanism,omitempty"` // pkcs11 or shamir (add, remove)
	Shares    int      `json:"shares,omitempty"`    // new shares (rotate-shares, add shamir, remove pkcs11); 0: the config's
	Threshold int      `json:"threshold,omitempty"` // 0: the config's
	PGPKeys   []string `json:"pgp_keys,omitempty"`
	// AuthorizeWith is "shares" or "recovery_keys"; empty: shares when
	// Shamir is enrolled, else recovery keys.
	AuthorizeWith string `json:"authorize_with,omitempty"`
}
