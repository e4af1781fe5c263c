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

require 'open3'
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

  SERVICE = 'secrets-appliance'.freeze
  CONFIG_FILE = 'appliance.json'.freeze
  AUDIT_TYPES = %w[file syslog socket].freeze
  AUDIT_BLOCK_KEYS = %w[enable path description].freeze
  RETRY_JOIN_KEYS = %w[leader_api_addr leader_ca_cert_file leader_client_cert_file
                       leader_client_key_file leader_tls_servername].freeze
  WILDCARD_HOSTS = ['', '0.0.0.0', '::', '[::]'].freeze

  class << self
    # The API URL this node advertises: api_addr if set; with a wildcard
    # listen address, https://<fqdn>:<port>; else nil (the appliance
    # derives it from the listener).
    def api_addr(explicit, listen_address, tls_disable, fqdn)
      return explicit unless blank?(explicit)

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

  def api_addr
    self.class.api_addr(settings['api_addr'], settings['listen_address'], settings['tls_disable'], node['fqdn'])
  end

  def cluster_addr
    self.class.cluster_addr(settings['cluster_addr'], settings['cluster_listen_address'], node['fqdn'])
  end

  def ctl_address
    self.class.ctl_address(settings['ctl_address'], api_addr, settings['listen_address'], settings['tls_disable'])
  end

  # Metrics are served without a token when Prometheus scrapes without
  # one, unless unauthenticated_metrics_access says otherwise.
  def unauthenticated_metrics_access?
    explicit = settings['unauthenticated_metrics_access']
    return explicit unless explicit.nil?

    !!settings['prometheus_scrape_enable'] && self.class.blank?(settings['prometheus_scrape_credentials_file'])
  end

  # The appliance's config file, as a Hash for JSON.
  def config
    compact(
      'node_id' => settings['node_id'],
      'data_dir' => settings['data_dir'],
      'api_addr' => api_addr,
      'cluster_addr' => cluster_addr,
      'log_level' => settings['log_level'],
      'log_format' => settings['log_format'],
      'listener' => [listener],
      'cluster' => { 'address' => settings['cluster_listen_address'] },
      'raft' => raft,
      'audit' => audit,
      'telemetry' => telemetry,
      'seal' => seal,
      'gitlab' => gitlab
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

  def raft
    r = settings['raft'] || {}
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

  # Runs `gitlab-secrets-appliance config validate` on a rendered config
  # (a template's verify step); raises with the appliance's answer.
  def validate(path)
    out, status = Open3.capture2e(binary, 'config', 'validate', path)
    return true if status.success?

    raise "The secrets appliance config rendered from gitlab_secrets_appliance[...] in /etc/gitlab/gitlab.rb " \
          "is not valid (#{binary} config validate, exit #{status.exitstatus}):\n#{out}"
  end

  def logging_settings
    log_group = settings['log_group'] || node.dig('gitlab', 'logging', 'log_group')
    options = (node.dig('gitlab', 'logging') || {}).to_hash.merge(settings.to_hash)
    {
      log_directory: settings['log_directory'],
      log_directory_owner: settings['username'],
      log_directory_group: log_group,
      log_directory_mode: log_group ? '0750' : '0700',
      runit_owner: 'root',
      runit_group: log_group,
      options: options.select { |k, _| k.to_s.start_with?('svlogd_') }
    }
  end

  # @options of the sv-secrets-appliance-*.erb templates.
  def runit_options
    logging = logging_settings
    {
      user: settings['username'],
      groupname: settings['group'],
      groups: [settings['group'], *Array(settings['supplementary_groups'])].uniq.join(':'),
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

  # What gitlab-ctl's secrets-appliance-* commands read from
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
end
