####
# GitLab secrets appliance: an embedded OpenBao server on every GitLab node.
#
# Each key below is set in /etc/gitlab/gitlab.rb as
# gitlab_secrets_appliance['KEY'] and rendered by `gitlab-ctl reconfigure`
# into the appliance's config file (appliance.json, the JSON form of the
# appliance's HCL config; see the appliance's README, Configuration). The
# comment on each key names the config key it becomes. Keys the appliance
# does not implement yet are at the end and are never rendered.
####
default['gitlab_secrets_appliance']['enable'] = false

# The service account. The appliance runs as this user (runit, chpst).
# Omnibus' AccountHelper knows it (secrets_appliance_user/_group), so
# `gitlab-ctl remove-accounts` removes it with the other service accounts.
default['gitlab_secrets_appliance']['username'] = 'gitlab-secrets'
default['gitlab_secrets_appliance']['group'] = 'gitlab-secrets'
default['gitlab_secrets_appliance']['uid'] = nil
default['gitlab_secrets_appliance']['gid'] = nil
default['gitlab_secrets_appliance']['shell'] = '/usr/sbin/nologin'
# More groups for the service user, e.g. the group that may use the HSM's
# token files (Debian's softhsm2: softhsm).
default['gitlab_secrets_appliance']['supplementary_groups'] = []

# dir holds appliance.json (root:group 0640); data_dir (node data_dir) holds
# the Raft data, owned by the service user, mode 0700.
default['gitlab_secrets_appliance']['dir'] = '/var/opt/gitlab/gitlab-secrets-appliance'
default['gitlab_secrets_appliance']['data_dir'] = '/var/opt/gitlab/gitlab-secrets-appliance/data'
default['gitlab_secrets_appliance']['log_directory'] = '/var/log/gitlab/gitlab-secrets-appliance'
default['gitlab_secrets_appliance']['log_group'] = nil
# Rotation of the file audit log (<log_directory>/audit.log) by Omnibus'
# logrotate service (logrotate['services'] lists gitlab-secrets-appliance),
# with gitlab.rb's logging['logrotate_*'] settings except these three, which
# only gitlab_secrets_appliance['logrotate_*'] changes. audit.log is moved
# aside, never copied and truncated (Omnibus' default copytruncate loses
# the entries written between the copy and the truncation); postrotate
# sends SIGHUP, on which the appliance closes the moved file and creates a
# new audit.log; delaycompress leaves the moved file uncompressed until the
# next rotation, as the appliance may write to it until the SIGHUP arrives.
default['gitlab_secrets_appliance']['logrotate_method'] = 'nocopytruncate'
default['gitlab_secrets_appliance']['logrotate_compress'] = "compress\n  delaycompress"
default['gitlab_secrets_appliance']['logrotate_postrotate'] = "#{node['package']['install-dir']}/bin/gitlab-ctl hup gitlab-secrets-appliance"
default['gitlab_secrets_appliance']['env_directory'] = '/opt/gitlab/etc/gitlab-secrets-appliance/env'
# The service's environment (chpst -e). BAO_* and VAULT_* variables are
# ignored by the appliance. An HSM library may need its own, e.g.
# 'SOFTHSM2_CONF' => '/etc/softhsm/softhsm2.conf'.
default['gitlab_secrets_appliance']['env'] = {
  'SSL_CERT_DIR' => "#{node['package']['install-dir']}/embedded/ssl/certs/"
}

# node_id: unique in the Raft cluster (1-64 letters, digits, '.', '_', '-').
default['gitlab_secrets_appliance']['node_id'] = node.name
default['gitlab_secrets_appliance']['log_level'] = 'info'       # log_level
default['gitlab_secrets_appliance']['log_format'] = 'standard'  # log_format: standard or json

# The API listener (listener[0]) and the cluster listener (cluster.address).
default['gitlab_secrets_appliance']['listen_address'] = '0.0.0.0:8200'
default['gitlab_secrets_appliance']['cluster_listen_address'] = '0.0.0.0:8201'
# api_addr and cluster_addr: the URLs the other nodes and GitLab reach this
# node at. nil: with a wildcard listen address, https://<fqdn>:<port>;
# otherwise the appliance derives them from the listeners.
default['gitlab_secrets_appliance']['api_addr'] = nil
default['gitlab_secrets_appliance']['cluster_addr'] = nil

# TLS of the API listener. tls_disable serves plain HTTP and is accepted
# on a loopback listen_address only.
default['gitlab_secrets_appliance']['tls_disable'] = false
default['gitlab_secrets_appliance']['tls_cert_file'] = '/etc/gitlab/ssl/secrets-appliance.crt'
default['gitlab_secrets_appliance']['tls_key_file'] = '/etc/gitlab/ssl/secrets-appliance.key'
default['gitlab_secrets_appliance']['tls_min_version'] = 'tls12'  # tls12 or tls13
default['gitlab_secrets_appliance']['tls_client_ca_file'] = nil
default['gitlab_secrets_appliance']['tls_require_client_cert'] = false
default['gitlab_secrets_appliance']['x_forwarded_for_authorized_addrs'] = []
# The CA that signed the appliance certificates: the CA gitlab-ctl's
# commands and Prometheus trust, each retry_join URL's
# leader_ca_cert_file unless the entry names its own, and with Geo
# geo.ca_cert_file (the other nodes, when joining and polled by the active
# node). nil: the system's CAs.
default['gitlab_secrets_appliance']['ca_cert_file'] = nil
# The URL gitlab-ctl's commands talk to. nil: api_addr, or the listener
# (127.0.0.1 for a wildcard address).
default['gitlab_secrets_appliance']['ctl_address'] = nil

# Raft (raft block). retry_join lists the other nodes: each an API URL, or
# a Hash with leader_api_addr and optionally leader_ca_cert_file,
# leader_client_cert_file, leader_client_key_file, leader_tls_servername.
# With geo enabled, retry_join defaults to the topology's other nodes and
# non_voter is an error (Geo decides who votes).
default['gitlab_secrets_appliance']['raft']['performance_multiplier'] = 1
default['gitlab_secrets_appliance']['raft']['non_voter'] = false
default['gitlab_secrets_appliance']['raft']['retry_join'] = []

# Seal mechanisms (seal block): each enabled one unseals on its own.
# pkcs11: the HSM unseals at every start. pin_file: a file holding the
# token's user PIN, mode 0640 at most (reconfigure makes it root:group 0640).
default['gitlab_secrets_appliance']['seal']['pkcs11']['enable'] = false
default['gitlab_secrets_appliance']['seal']['pkcs11']['library'] = nil
default['gitlab_secrets_appliance']['seal']['pkcs11']['token_label'] = nil
default['gitlab_secrets_appliance']['seal']['pkcs11']['slot'] = nil
default['gitlab_secrets_appliance']['seal']['pkcs11']['key_label'] = 'gitlab-secrets-kek'
default['gitlab_secrets_appliance']['seal']['pkcs11']['pin_file'] = nil
# shamir: operators' shares; shares/threshold are what `init` issues.
default['gitlab_secrets_appliance']['seal']['shamir']['enable'] = true
default['gitlab_secrets_appliance']['seal']['shamir']['shares'] = 5
default['gitlab_secrets_appliance']['seal']['shamir']['threshold'] = 3

# GitLab Rails' OpenBao: with the appliance enabled, reconfigure sets
# gitlab_rails['openbao']['url'] (unless gitlab.rb sets it) to this node's
# API URL (api_addr, or the listener). In a cluster, set it on every node to
# the one URL GitLab reaches the cluster at: it is also the audience of
# GitLab's tokens. The OpenBao that OAK runs in Kubernetes
# (oak['components']['openbao']['enable']) and the appliance are refused
# together: GitLab talks to one OpenBao.
#
# GitLab Rails' login (gitlab block). With enable, url defaults to
# external_url, jwks_url to <url>/oauth/discovery/keys (unless
# jwt_validation_pubkeys_file is set), audience to
# gitlab_rails['openbao']['jwt_audience'] or gitlab_rails['openbao']['url'].
default['gitlab_secrets_appliance']['gitlab']['enable'] = false
default['gitlab_secrets_appliance']['gitlab']['url'] = nil
default['gitlab_secrets_appliance']['gitlab']['jwks_url'] = nil
default['gitlab_secrets_appliance']['gitlab']['jwks_ca_file'] = nil
default['gitlab_secrets_appliance']['gitlab']['jwt_validation_pubkeys_file'] = nil
default['gitlab_secrets_appliance']['gitlab']['pubkeys_jwks_address'] = nil
default['gitlab_secrets_appliance']['gitlab']['audience'] = nil
default['gitlab_secrets_appliance']['gitlab']['token_ttl'] = nil
default['gitlab_secrets_appliance']['gitlab']['token_max_ttl'] = nil

# Audit devices (audit blocks). Every key but enable, path and description
# is an option of the OpenBao audit device. file_path nil: <log_directory>/audit.log.
default['gitlab_secrets_appliance']['audit']['file']['enable'] = true
default['gitlab_secrets_appliance']['audit']['file']['file_path'] = nil
default['gitlab_secrets_appliance']['audit']['file']['mode'] = '0600'
default['gitlab_secrets_appliance']['audit']['syslog']['enable'] = false
default['gitlab_secrets_appliance']['audit']['syslog']['tag'] = 'gitlab-secrets-appliance'
default['gitlab_secrets_appliance']['audit']['syslog']['facility'] = 'AUTH'

# Metrics (telemetry block), served at /v1/sys/metrics?format=prometheus.
default['gitlab_secrets_appliance']['telemetry']['prometheus_retention_time'] = '24h'
default['gitlab_secrets_appliance']['telemetry']['disable_hostname'] = true
# The API listener (listen_address, every address: Runners and the other
# nodes reach it) serves metrics only with a token that may read
# sys/metrics, as OpenBao does by default; unauthenticated_metrics_access
# = true serves them there without one (they name every mount and
# namespace: GitLab's org_<o>/group_<g>/project_<p>).
default['gitlab_secrets_appliance']['unauthenticated_metrics_access'] = false
# A second listener, on loopback only and plain HTTP, that serves metrics
# without a token for GitLab's bundled Prometheus on this node
# (listener[1], unauthenticated_metrics_access). It serves the whole API,
# as every OpenBao listener does, but only to this host. false: none.
# With tls_require_client_cert it is not rendered unless gitlab.rb sets it
# (it would let local processes past the client certificate).
default['gitlab_secrets_appliance']['metrics_listen_address'] = '127.0.0.1:8202'
# The bundled Prometheus scrapes: with prometheus_scrape_credentials_file
# (a token allowed to read sys/metrics, readable by Prometheus' user) the
# API listener, sending that token; else the metrics listener; else, with
# unauthenticated_metrics_access, the API listener without a token.
default['gitlab_secrets_appliance']['prometheus_scrape_enable'] = true
default['gitlab_secrets_appliance']['prometheus_scrape_credentials_file'] = nil
default['gitlab_secrets_appliance']['prometheus_scrape_tls_server_name'] = nil

# Geo (geo block): Raft follows GitLab Geo. The primary site's nodes vote
# (one does not when they are even), the other sites' nodes are
# non-voting replicas, and the active node moves the membership one safe
# step at a time when the primary site changes. With geo enabled, the
# appliance takes this node's api_addr and cluster_addr from its entry in
# the sites (api_addr/cluster_addr above, if set, must equal them) and its
# retry_join from the other nodes, primary site first (raft['retry_join'],
# if set, replaces that list); raft['non_voter'] must not be set.
default['gitlab_secrets_appliance']['geo']['enable'] = false
# The Geo sites, the same list on every node of every site: an Array of
#   { 'name' => 'site-a',                           # the site's Geo name
#     'primary' => true,                            # on exactly one site
#     'preferred_leader' => 'gitlab-a1.example.com',  # optional, a node of the site
#     'nodes' => [{ 'id' => 'gitlab-a1.example.com',  # the node's node_id
#                   'api_addr' => nil,              # nil: https://<id>:8200
#                   'cluster_addr' => nil }] }      # nil: https://<id>:8201
# A node may be given by its id alone ('gitlab-a1.example.com'). The order
# counts: nodes join primary site first, and min_voters takes secondary
# nodes in this order. Reconfigure writes it to topology_file; a running
# node follows a changed file without a restart.
default['gitlab_secrets_appliance']['geo']['sites'] = nil
# min_voters: when the primary site has fewer nodes, the first secondary
# nodes vote too (a cross-site round trip in every commit). nil or 0: no
# minimum; otherwise odd.
default['gitlab_secrets_appliance']['geo']['min_voters'] = nil
# geo.topology_file: where reconfigure writes the sites (root:group 0644).
# nil: <dir>/geo-topology.json.
default['gitlab_secrets_appliance']['geo']['topology_file'] = nil
# geo.cluster_file: a gitlab-cluster.json whose Geo role (what
# `gitlab-ctl geo promote` records) overrides the sites' 'primary'.
# nil: reconfigure mirrors the Geo role keys of /etc/gitlab/gitlab-cluster.json
# (root's, 0600: the service cannot read it) to <dir>/geo-gitlab-cluster.json
# (root:group 0640, the source's modification time) and the appliance reads
# that; `gitlab-ctl geo promote` runs reconfigure. A file named here is read
# as it is: the service user must be able to read it.
default['gitlab_secrets_appliance']['geo']['cluster_file'] = nil
# geo.ca_cert_file is ca_cert_file above (the other nodes' certificates).

####
# Scheduled Raft snapshots (the appliance's snapshot block): taken by the
# active node every interval into directory (created for the service user,
# 0700), keeping the newest `retain` and, with retain_age ('168h'), none
# older. Each one is whole or absent; `gitlab-secrets-appliance snapshot
# inspect FILE` says what it holds. directory nil: <dir>/snapshots
# (/var/opt/gitlab/gitlab-secrets-appliance/snapshots). Another directory must be
# one the service user can reach and write: reconfigure checks it as that
# user. /var/opt/gitlab/backups is git's, 0700: not there.
####
default['gitlab_secrets_appliance']['snapshots']['enable'] = false
default['gitlab_secrets_appliance']['snapshots']['interval'] = '1h'
default['gitlab_secrets_appliance']['snapshots']['retain'] = 24
default['gitlab_secrets_appliance']['snapshots']['retain_age'] = nil
default['gitlab_secrets_appliance']['snapshots']['directory'] = nil
