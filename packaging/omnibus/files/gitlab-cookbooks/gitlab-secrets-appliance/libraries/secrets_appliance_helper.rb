#
# Copyright:: Copyright (c) 2026 GitLab Inc.
# License:: Apache License, Version 2.0
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#

require 'fileutils'
require 'json'
require 'open3'
require 'tempfile'
require 'uri'
# Omnibus' BaseHelper (a test harness may have defined it already).
require_relative '../../package/libraries/helpers/base_helper' unless defined?(BaseHelper)

# SecretsApplianceHelper turns node['gitlab_secrets_appliance'] into the
# appliance's config (appliance.json) and the runit service's options.
# It renders only keys the appliance's config accepts; reconfigure checks
# the result with `gitlab-secrets-appliance config validate` before it
# replaces appliance.json.
class SecretsApplianceHelper < BaseHelper
  attr_reader :node

  # The runit service: gitlab-ctl status|restart|tail gitlab-secrets-appliance.
  # It is the settings' name (gitlab_secrets_appliance) hyphenated, which
  # Omnibus' LogfilesHelper and OmnibusHelper#should_notify? rely on.
  SERVICE = 'gitlab-secrets-appliance'.freeze
  CONFIG_FILE = 'appliance.json'.freeze
  AUDIT_TYPES = %w[file syslog socket].freeze
  AUDIT_BLOCK_KEYS = %w[enable path description].freeze
  RETRY_JOIN_KEYS = %w[leader_api_addr leader_ca_cert_file leader_client_cert_file
                       leader_client_key_file leader_tls_servername].freeze
  WILDCARD_HOSTS = ['', '0.0.0.0', '::', '[::]'].freeze
  GEO_SITES_KEY = "gitlab_secrets_appliance['geo']['sites']".freeze
  GEO_SITE_KEYS = %w[name primary preferred_leader nodes].freeze
  GEO_NODE_KEYS = %w[id api_addr cluster_addr].freeze
  # A Geo node's addresses when its entry leaves them out: the cookbook's
  # default listeners, on the host named by its id.
  GEO_API_PORT = 8200
  GEO_CLUSTER_PORT = 8201
  GEO_TOPOLOGY_FILE = 'geo-topology.json'.freeze
  # Where reconfigure mirrors the Geo role of Omnibus' gitlab-cluster.json.
  GEO_CLUSTER_COPY = 'geo-gitlab-cluster.json'.freeze
  GEO_CLUSTER_SOURCE = '/etc/gitlab/gitlab-cluster.json'.freeze
  GEO_NON_VOTER_ERROR = "gitlab_secrets_appliance['raft']['non_voter'] cannot be set with gitlab_secrets_appliance['geo']['enable']: " \
                        "the Geo topology decides which nodes vote (the primary site's nodes; the other sites' are non-voting replicas). " \
                        "Remove raft['non_voter'].".freeze

  class << self
    # The API URL this node advertises: api_addr if set; with Geo, this
    # node's entry in the topology; with a wildcard listen address,
    # https://<fqdn>:<port>; else nil (the appliance derives it from the
    # listener).
    def api_addr(explicit, listen_address, tls_disable, fqdn, geo_node = nil)
      return explicit unless blank?(explicit)
      return geo_node['api_addr'] if geo_node

      host, port = split_host_port(listen_address)
      return nil unless WILDCARD_HOSTS.include?(host) && !blank?(fqdn)

      "#{tls_disable ? 'http' : 'https'}://#{fqdn}:#{port}"
    end

    # The cluster URL this node advertises, the same way (always https).
    def cluster_addr(explicit, cluster_listen_address, fqdn)
      return explicit unless blank?(explicit)

      host, port = split_host_port(cluster_listen_address)
      return nil unless WILDCARD_HOSTS.include?(host) && !blank?(fqdn)

      "https://#{fqdn}:#{port}"
    end

    # The URL a client on this node (gitlab-ctl, Prometheus) reaches the
    # API at: ctl_address, else the advertised API URL, else the listener
    # itself (127.0.0.1 for a wildcard address).
    def ctl_address(explicit, api_addr, listen_address, tls_disable)
      return explicit unless blank?(explicit)
      return api_addr unless blank?(api_addr)

      host, port = split_host_port(listen_address)
      host = '127.0.0.1' if WILDCARD_HOSTS.include?(host)
      host = "[#{host}]" if host.include?(':')
      "#{tls_disable ? 'http' : 'https'}://#{host}:#{port}"
    end

    def split_host_port(address)
      address = address.to_s
      if (m = address.match(/\A\[(?<host>[^\]]*)\]:(?<port>\d+)\z/))
        [m[:host], m[:port]]
      else
        host, _, port = address.rpartition(':')
        [host, port]
      end
    end

    def blank?(value)
      value.nil? || value.to_s.empty?
    end

    # metrics_listen_address: an address, or nil for none (false and ''
    # say none too: a nil in gitlab.rb leaves the default).
    def metrics_listen_address(value)
      value.nil? || value == false || value.to_s.empty? ? nil : value.to_s
    end

    # The Geo topology file's content (geo.Topology's JSON form) from
    # gitlab_secrets_appliance['geo']: the sites in gitlab.rb's order (it
    # is meaningful: retry_join and min_voters go by it), each key in a
    # fixed order, so that every node renders the same bytes. A node's
    # api_addr and cluster_addr default to https://<id>:8200 and :8201.
    # Raises, naming the gitlab.rb key, on what Ruby can tell cheaply
    # (shape, unknown keys, names, this node missing); the appliance
    # checks the rest (one primary, unique ids and addresses,
    # preferred_leader, min_voters) when reconfigure validates the file.
    def geo_topology(geo, node_id)
      sites = geo && geo['sites']
      unless sites.is_a?(Array) && !sites.empty?
        raise "#{GEO_SITES_KEY}: list the Geo sites (the same list on every node), each " \
              "{ 'name' => '<Geo site name>', 'primary' => true|false, 'preferred_leader' => '<node id>' (optional), " \
              "'nodes' => [{ 'id' => '<node_id>', 'api_addr' => ..., 'cluster_addr' => ... }] }"
      end

      topology = {}
      min_voters = geo['min_voters']
      unless min_voters.nil?
        begin
          topology['min_voters'] = Integer(min_voters)
        rescue ArgumentError, TypeError
          raise "gitlab_secrets_appliance['geo']['min_voters']: #{min_voters.inspect} is not a number"
        end
      end
      topology['sites'] = sites.each_with_index.map { |site, i| geo_site(site, "#{GEO_SITES_KEY}[#{i}]") }

      unless topology['sites'].any? { |s| s['nodes'].any? { |n| n['id'] == node_id } }
        listed = topology['sites'].map { |s| "#{s['name']}: #{s['nodes'].map { |n| n['id'] }.join(', ')}" }.join('; ')
        raise "#{GEO_SITES_KEY}: this node's node_id #{node_id} is not a node of any site (#{listed}). " \
              "Add it to its site's nodes on every node, or set gitlab_secrets_appliance['node_id'] to its id there."
      end

      topology
    end

    # This node's entry in a topology from geo_topology.
    def geo_node(topology, node_id)
      topology['sites'].each do |s|
        s['nodes'].each { |n| return n if n['id'] == node_id }
      end
      nil
    end

    private

    def geo_site(site, key)
      raise "#{key}: a site is a Hash with #{GEO_SITE_KEYS.join(', ')}, not #{site.inspect}" unless site.respond_to?(:to_hash)

      s = site.to_hash.transform_keys(&:to_s)
      unknown = s.keys - GEO_SITE_KEYS
      raise "#{key}: unknown key(s) #{unknown.join(', ')}; use #{GEO_SITE_KEYS.join(', ')}" unless unknown.empty?
      raise "#{key}: 'name' is missing: use the site's Geo name" if blank?(s['name'])
      raise "#{key} (#{s['name']}): 'primary' is #{s['primary'].inspect}: use true or false" unless [true, false, nil].include?(s['primary'])

      name = s['name'].to_s
      nodes = s['nodes']
      raise "#{key} (#{name}): 'nodes' lists no node: give each of the site's nodes, by its node_id" unless nodes.is_a?(Array) && !nodes.empty?

      out = { 'name' => name }
      out['primary'] = true if s['primary']
      out['preferred_leader'] = s['preferred_leader'].to_s unless blank?(s['preferred_leader'])
      out['nodes'] = nodes.each_with_index.map { |n, j| geo_site_node(n, "#{key}['nodes'][#{j}]") }
      out
    end

    def geo_site_node(node, key)
      node = { 'id' => node } if node.is_a?(String)
      raise "#{key}: a node is a Hash with #{GEO_NODE_KEYS.join(', ')} (or only its id), not #{node.inspect}" unless node.respond_to?(:to_hash)

      n = node.to_hash.transform_keys(&:to_s)
      unknown = n.keys - GEO_NODE_KEYS
      raise "#{key}: unknown key(s) #{unknown.join(', ')}; use #{GEO_NODE_KEYS.join(', ')}" unless unknown.empty?
      raise "#{key}: 'id' is missing: use the node's node_id" if blank?(n['id'])

      id = n['id'].to_s
      {
        'id' => id,
        'api_addr' => blank?(n['api_addr']) ? "https://#{id}:#{GEO_API_PORT}" : n['api_addr'].to_s,
        'cluster_addr' => blank?(n['cluster_addr']) ? "https://#{id}:#{GEO_CLUSTER_PORT}" : n['cluster_addr'].to_s
      }
    end
  end

  def settings
    node['gitlab_secrets_appliance']
  end

  def binary
    File.join(node['package']['install-dir'], 'embedded', 'bin', 'gitlab-secrets-appliance')
  end

  def config_file
    File.join(settings['dir'], CONFIG_FILE)
  end

  # The API URL this node advertises (gitlab-ctl, Prometheus, and the
  # retry_join entry it leaves out): with Geo, its topology entry's unless
  # api_addr is set.
  def api_addr
    self.class.api_addr(settings['api_addr'], settings['listen_address'], settings['tls_disable'], node['fqdn'], geo_node)
  end

  def cluster_addr
    explicit = settings['cluster_addr']
    return geo_node['cluster_addr'] if geo? && self.class.blank?(explicit)

    self.class.cluster_addr(explicit, settings['cluster_listen_address'], node['fqdn'])
  end

  def geo?
    !!settings.dig('geo', 'enable')
  end

  # The topology file's content, as a Hash (see self.geo_topology).
  def geo_topology
    @geo_topology ||= self.class.geo_topology(settings['geo'], settings['node_id'])
  end

  def geo_node
    geo? ? self.class.geo_node(geo_topology, settings['node_id']) : nil
  end

  def geo_topology_json
    "#{JSON.pretty_generate(geo_topology)}\n"
  end

  # geo.topology_file: geo['topology_file'], else beside appliance.json.
  def geo_topology_file
    explicit = settings.dig('geo', 'topology_file')
    self.class.blank?(explicit) ? File.join(settings['dir'], GEO_TOPOLOGY_FILE) : explicit
  end

  # Omnibus' gitlab-cluster.json is root's, mode 0600 (GitlabCluster#save):
  # the service user cannot read it. Unless geo['cluster_file'] names a
  # file, reconfigure mirrors its Geo role into one the service can read
  # (see sync_geo_cluster_file), and the appliance reads that.
  def geo_cluster_copy?
    self.class.blank?(settings.dig('geo', 'cluster_file'))
  end

  def geo_cluster_file
    geo_cluster_copy? ? File.join(settings['dir'], GEO_CLUSTER_COPY) : settings.dig('geo', 'cluster_file')
  end

  def geo_cluster_source
    defined?(GitlabCluster) ? GitlabCluster::JSON_FILE : GEO_CLUSTER_SOURCE
  end

  def ctl_address
    self.class.ctl_address(settings['ctl_address'], api_addr, settings['listen_address'], settings['tls_disable'])
  end

  # The API listener serves metrics without a token only when the
  # operator says so: it listens on every address.
  def unauthenticated_metrics_access?
    !!settings['unauthenticated_metrics_access']
  end

  # The loopback listener that serves metrics without a token, or nil.
  def metrics_listen_address
    self.class.metrics_listen_address(settings['metrics_listen_address'])
  end

  # The appliance's config file, as a Hash for JSON.
  def config
    compact(
      'node_id' => settings['node_id'],
      'data_dir' => settings['data_dir'],
      'api_addr' => geo? ? presence(settings['api_addr']) : api_addr,
      'cluster_addr' => geo? ? presence(settings['cluster_addr']) : cluster_addr,
      'log_level' => settings['log_level'],
      'log_format' => settings['log_format'],
      'listener' => [listener, metrics_listener].compact,
      'cluster' => { 'address' => settings['cluster_listen_address'] },
      'raft' => raft,
      'audit' => audit,
      'telemetry' => telemetry,
      'seal' => seal,
      'gitlab' => gitlab,
      'geo' => geo,
      'snapshot' => snapshot
    )
  end

  # The snapshot block: scheduled Raft snapshots, taken by the active node.
  def snapshot
    s = settings['snapshots'] || {}
    return nil unless s['enable']

    compact(
      'interval' => presence(s['interval']),
      'directory' => snapshot_directory,
      'retain_count' => s['retain'] && Integer(s['retain']),
      'retain_age' => presence(s['retain_age'])
    )
  end

  # The snapshot directory: directory, or <dir>/snapshots, which the
  # recipe creates for the service user (0700). Not under
  # /var/opt/gitlab/backups: omnibus-gitlab makes that git's, 0700, and the
  # service user could never reach it.
  def snapshot_directory
    s = settings['snapshots'] || {}
    return nil unless s['enable']

    presence(s['directory']) || File.join(settings['dir'], 'snapshots')
  end

  # Whether the installed binary's version differs from the one recorded
  # at the last reconfigure (the file version_file keeps); false on the
  # first one.
  def binary_changed?(version_path)
    return false unless File.exist?(version_path) && File.exist?(binary)

    out = IO.popen([binary, 'version'], err: %i[child out], &:read)
    $?.success? && out != File.read(version_path)
  end

  # USER:GROUP[:GROUP...] as the run script's chpst -u names them.
  def service_credentials
    "#{runit_options[:user]}:#{runit_options[:groups]}"
  end

  # The geo block. With it the appliance takes this node's api_addr and
  # cluster_addr (unless set in gitlab.rb) and its retry_join (unless
  # raft['retry_join'] is set) from the topology, and decides who votes.
  def geo
    return nil unless geo?

    compact(
      'topology_file' => geo_topology_file,
      'cluster_file' => geo_cluster_file,
      'ca_cert_file' => self.class.blank?(settings['ca_cert_file']) ? nil : settings['ca_cert_file']
    )
  end

  def listener
    l = {
      'address' => settings['listen_address'],
      'tls_min_version' => settings['tls_min_version'],
      'unauthenticated_metrics_access' => unauthenticated_metrics_access?
    }
    if settings['tls_disable']
      l['tls_disable'] = true
    else
      l['tls_cert_file'] = settings['tls_cert_file']
      l['tls_key_file'] = settings['tls_key_file']
      l['tls_client_ca_file'] = settings['tls_client_ca_file']
      l['tls_require_client_cert'] = true if settings['tls_require_client_cert']
    end
    xff = Array(settings['x_forwarded_for_authorized_addrs']).map(&:to_s)
    l['x_forwarded_for_authorized_addrs'] = xff unless xff.empty?
    compact(l)
  end

  # listener[1]: plain HTTP on loopback (the appliance refuses plain HTTP
  # on any other address), metrics without a token, for the bundled
  # Prometheus on this node.
  def metrics_listener
    address = metrics_listen_address
    return nil if address.nil?

    { 'address' => address, 'tls_disable' => true, 'tls_min_version' => settings['tls_min_version'], 'unauthenticated_metrics_access' => true }
  end

  def raft
    r = settings['raft'] || {}
    raise GEO_NON_VOTER_ERROR if geo? && r['non_voter']

    compact(
      'performance_multiplier' => r['performance_multiplier'].nil? ? nil : Integer(r['performance_multiplier']),
      'non_voter' => r['non_voter'] ? true : nil,
      'retry_join' => retry_join
    )
  end

  # retry_join entries, as URLs or Hashes, with this node's own URL left
  # out: every node can be given the same list of all nodes.
  def retry_join
    own = api_addr
    joins = Array(settings.dig('raft', 'retry_join')).each_with_index.map do |entry, i|
      j = entry.is_a?(String) ? { 'leader_api_addr' => entry } : entry.to_hash.transform_keys(&:to_s)
      unknown = j.keys - RETRY_JOIN_KEYS
      raise "gitlab_secrets_appliance['raft']['retry_join'][#{i}]: unknown key(s) #{unknown.join(', ')}; use #{RETRY_JOIN_KEYS.join(', ')}" unless unknown.empty?
      raise "gitlab_secrets_appliance['raft']['retry_join'][#{i}]: leader_api_addr is missing" if self.class.blank?(j['leader_api_addr'])

      j['leader_ca_cert_file'] ||= settings['ca_cert_file'] if j['leader_api_addr'].to_s.start_with?('https:')
      compact(j)
    end
    joins = joins.reject { |j| j['leader_api_addr'] == own } unless own.nil?
    joins.empty? ? nil : joins
  end

  # Audit devices by type: {"file" => {"options" => {...}}}.
  def audit
    devices = {}
    (settings['audit'] || {}).each do |type, device|
      raise "gitlab_secrets_appliance['audit']['#{type}']: unknown audit device type; use #{AUDIT_TYPES.join(', ')}" unless AUDIT_TYPES.include?(type.to_s)
      next unless device && device['enable']

      options = device.to_hash.reject { |k, v| AUDIT_BLOCK_KEYS.include?(k.to_s) || v.nil? }
      options = options.to_h { |k, v| [k.to_s, v.to_s] }
      options['file_path'] ||= File.join(settings['log_directory'], 'audit.log') if type.to_s == 'file'
      devices[type.to_s] = compact('path' => device['path'], 'description' => device['description'], 'options' => options)
    end
    devices.empty? ? nil : devices
  end

  def telemetry
    t = settings['telemetry'] || {}
    compact(
      'prometheus_retention_time' => self.class.blank?(t['prometheus_retention_time']) ? nil : t['prometheus_retention_time'].to_s,
      'disable_hostname' => t['disable_hostname'] ? true : nil
    )
  end

  def seal
    s = {}
    p = settings.dig('seal', 'pkcs11') || {}
    if p['enable']
      s['pkcs11'] = compact(
        'library' => p['library'],
        'token_label' => p['token_label'],
        'slot' => p['slot'].nil? ? nil : Integer(p['slot']),
        'key_label' => p['key_label'],
        'pin_file' => p['pin_file']
      )
    end
    sh = settings.dig('seal', 'shamir') || {}
    s['shamir'] = compact('shares' => sh['shares'] && Integer(sh['shares']), 'threshold' => sh['threshold'] && Integer(sh['threshold'])) if sh['enable']
    raise "gitlab_secrets_appliance['seal']: enable pkcs11, shamir, or both" if s.empty?

    s
  end

  def gitlab
    g = settings['gitlab'] || {}
    return nil unless g['enable']

    compact(
      'url' => g['url'],
      'jwks_url' => self.class.blank?(g['jwt_validation_pubkeys_file']) ? g['jwks_url'] : nil,
      'jwks_ca_file' => g['jwks_ca_file'],
      'jwt_validation_pubkeys_file' => g['jwt_validation_pubkeys_file'],
      'pubkeys_jwks_address' => g['pubkeys_jwks_address'],
      'audience' => g['audience'],
      'token_ttl' => g['token_ttl'],
      'token_max_ttl' => g['token_max_ttl']
    )
  end

  # Files the operator provides that hold secrets and that the service
  # user must read: reconfigure makes them root:<group> 0640, which the
  # appliance accepts.
  def private_files
    files = []
    files << settings['tls_key_file'] unless settings['tls_disable']
    files << settings.dig('seal', 'pkcs11', 'pin_file') if settings.dig('seal', 'pkcs11', 'enable')
    files.compact.reject(&:empty?).uniq
  end

  # The topology file's verify step: the appliance's config validate on
  # this node's config with geo.topology_file at the staged file, so that a
  # topology the appliance would refuse (or that does not fit this node's
  # config) never replaces the one the running node follows.
  def validate_topology(path)
    cfg = config
    cfg['geo'] = cfg['geo'].merge('topology_file' => path)
    Tempfile.create(['.chef-appliance-geo', '.json'], File.dirname(path)) do |f|
      f.write(JSON.pretty_generate(cfg))
      f.close
      validate(f.path, "with the Geo topology from gitlab_secrets_appliance['geo'] (checked as a staged copy of #{config_file})")
    end
  end

  # Writes the Geo role keys of Omnibus' gitlab-cluster.json (primary,
  # secondary, geo_secondary.enable: what `gitlab-ctl geo promote` sets
  # before it runs reconfigure) to geo_cluster_file, root:<group> 0640,
  # with the source's modification time: the appliance dates a node's
  # claim by it. Without a source, the copy goes (a missing file says
  # nothing). Unchanged, it is left alone.
  def sync_geo_cluster_file(source = geo_cluster_source)
    dest = geo_cluster_file
    return FileUtils.rm_f(dest) unless File.exist?(source)

    src = JSON.parse(File.read(source))
    roles = {}
    %w[primary secondary].each { |k| roles[k] = src[k] if src.key?(k) }
    roles['geo_secondary'] = { 'enable' => src['geo_secondary']['enable'] } if src['geo_secondary'].is_a?(Hash) && src['geo_secondary'].key?('enable')
    content = "#{JSON.pretty_generate(roles)}\n"
    mtime = File.mtime(source)
    return if File.exist?(dest) && File.read(dest) == content && File.mtime(dest) == mtime

    tmp = "#{dest}.#{Process.pid}.tmp"
    File.write(tmp, content, perm: 0o640)
    File.chmod(0o640, tmp)
    FileUtils.chown('root', AccountHelper.new(node).secrets_appliance_group, tmp) if Process.uid.zero?
    File.utime(mtime, mtime, tmp)
    File.rename(tmp, dest)
  ensure
    FileUtils.rm_f(tmp) if tmp
  end

  # Runs `gitlab-secrets-appliance config validate` on a rendered config
  # (a template's verify step); raises with the appliance's answer.
  # Reconfigure runs as root, for whom every path is writable: --user makes
  # the appliance try data_dir, the snapshot directory, the audit log and
  # the TLS and PIN files as the service user with the run script's groups
  # (chpst -u), so that a path the service can never use fails here.
  def validate(path, what = nil)
    out, status = Open3.capture2e(binary, 'config', 'validate', '--user', service_credentials, path)
    return true if status.success?

    raise "The secrets appliance config rendered from gitlab_secrets_appliance[...] in /etc/gitlab/gitlab.rb " \
          "#{what ? "#{what} " : ''}is not valid (#{binary} config validate, exit #{status.exitstatus}):\n#{out}"
  end

  # Omnibus' logging settings of the service (log directory, its owner
  # from LogfilesHelper#default_logdir_ownership, group, mode, svlogd
  # options), looked up by the service's name.
  def logging_settings
    @logging_settings ||= LogfilesHelper.new(node).logging_settings(SERVICE)
  end

  # @options of the sv-gitlab-secrets-appliance-*.erb templates.
  def runit_options
    logging = logging_settings
    account = AccountHelper.new(node)
    {
      user: account.secrets_appliance_user,
      groupname: account.secrets_appliance_group,
      groups: [account.secrets_appliance_group, *Array(settings['supplementary_groups'])].uniq.join(':'),
      env_directory: settings['env_directory'],
      working_dir: settings['dir'],
      config_file: config_file,
      binary: binary,
      log_directory: logging[:log_directory],
      log_user: logging[:runit_owner],
      log_group: logging[:runit_group],
      log_format: settings['log_format']
    }
  end

  # What `gitlab-ctl secrets-appliance` reads from
  # /var/opt/gitlab/public_attributes.json (no secret in it).
  def public_attributes
    return { 'gitlab_secrets_appliance' => { 'enable' => false } } unless settings && settings['enable']

    {
      'gitlab_secrets_appliance' => {
        'enable' => true,
        'ctl_address' => ctl_address,
        'ca_cert_file' => settings['ca_cert_file'],
        'config_file' => config_file
      }
    }
  end

  private

  def compact(hash)
    hash.reject { |_, v| v.nil? }
  end

  def presence(value)
    self.class.blank?(value) ? nil : value
  end
end
