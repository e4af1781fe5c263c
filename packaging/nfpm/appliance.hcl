# gitlab-secrets-appliance: this node's configuration (every key: README.md,
# "Configuration"). The package installs it once and never overwrites it.
#
# The node does not start until node_id is set. Then:
#   gitlab-secrets-appliance config validate --user gitlab-secrets-appliance /etc/gitlab-secrets-appliance/appliance.hcl
#   systemctl enable --now gitlab-secrets-appliance
#   gitlab-secrets-appliance init        # once per cluster
# `systemctl reload gitlab-secrets-appliance` applies TLS certificates, the
# log level, audit devices and the gitlab block; the rest needs a restart.

# node_id = "gitlab-1"                            # required: unique in the cluster (e.g. the host name)
data_dir = "/var/lib/gitlab-secrets-appliance"    # the unit lets the node write only here and in /var/log/gitlab-secrets-appliance

listener {
  # Loopback, plain HTTP: enough to initialize and try the node. Other nodes
  # and GitLab need TLS: set the address, the certificate and its key
  # (0640 root:gitlab-secrets-appliance) and remove tls_disable.
  address     = "127.0.0.1:8200"
  tls_disable = true
  # address         = "0.0.0.0:8200"
  # tls_cert_file   = "/etc/gitlab-secrets-appliance/tls/cert.pem"
  # tls_key_file    = "/etc/gitlab-secrets-appliance/tls/key.pem"
  # tls_min_version = "tls12"
}

audit "file" {
  options = { file_path = "/var/log/gitlab-secrets-appliance/audit.log" }
}

seal {
  # An HSM unseals at every start; its PIN file 0640 root:gitlab-secrets-appliance.
  # pkcs11 {
  #   library     = "/usr/lib/softhsm/libsofthsm2.so"
  #   token_label = "gitlab"
  #   pin_file    = "/etc/gitlab-secrets-appliance/hsm-pin"
  #   key_label   = "gitlab-secrets-kek"
  # }
  shamir {
    shares    = 5
    threshold = 3
  }
}
