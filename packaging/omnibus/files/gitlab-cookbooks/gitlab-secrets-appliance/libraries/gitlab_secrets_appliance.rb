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

require 'uri'
require_relative 'secrets_appliance_helper'

# Parses gitlab_secrets_appliance[...] of gitlab.rb. Registered in
# package/libraries/config/gitlab.rb as
#   attribute('gitlab_secrets_appliance', priority: 20).use { GitlabSecretsAppliance }
# so it runs before Prometheus (priority 21), which keeps the scrape config
# added here.
module GitlabSecretsAppliance
  SCRAPE_JOB_NAME = 'gitlab-secrets-appliance'.freeze
  METRICS_PATH = '/v1/sys/metrics'.freeze
  # Keys of the geo block before the topology: a site's name alone cannot
  # place the nodes.
  REMOVED_GEO_KEYS = %w[site primary_site].freeze

  class << self
    def parse_variables
      return unless attr('enable')

      parse_geo
      parse_gitlab
      parse_scrape_config
    end

    # Geo: fail early, naming the gitlab.rb key, on what Ruby can check
    # (the sites' shape, this node among them, raft['non_voter']); the
    # appliance checks the rest when reconfigure validates the files.
    def parse_geo
      REMOVED_GEO_KEYS.each do |key|
        next if (user_config['geo'] || {})[key].nil?

        LoggingHelper.deprecation("gitlab_secrets_appliance['geo']['#{key}'] is no longer used and is ignored: list every Geo site " \
                                  "and its nodes in gitlab_secrets_appliance['geo']['sites'] (the same list on every node), " \
                                  "with 'primary' => true on the Geo primary site")
      end
      return unless nested('geo', 'enable')

      raise SecretsApplianceHelper::GEO_NON_VOTER_ERROR if nested('raft', 'non_voter')

      unless Array(nested('raft', 'retry_join')).empty?
        LoggingHelper.warning("gitlab_secrets_appliance['raft']['retry_join'] is set with gitlab_secrets_appliance['geo']['enable']: " \
                              "this node joins through that list instead of every other node of gitlab_secrets_appliance['geo']['sites']; " \
                              "remove it to join through the topology")
      end
      geo_topology
    end

    def geo_topology
      SecretsApplianceHelper.geo_topology({ 'sites' => nested('geo', 'sites'), 'min_voters' => nested('geo', 'min_voters') }, attr('node_id'))
    end

    # The gitlab block's defaults come from GitLab's own settings on this
    # node: its external URL (the issuer of its tokens), its key set, and
    # the appliance URL GitLab Rails is configured with (the audience).
    def parse_gitlab
      return unless nested('gitlab', 'enable')

      default_nested('gitlab', 'url') { Gitlab['external_url']&.to_s&.chomp('/') }
      default_nested('gitlab', 'jwks_url') do
        url = nested('gitlab', 'url')
        "#{url}/oauth/discovery/keys" if blank?(nested('gitlab', 'jwt_validation_pubkeys_file')) && !blank?(url)
      end
      default_nested('gitlab', 'audience') do
        openbao = Gitlab['gitlab_rails']['openbao'] || {}
        openbao['jwt_audience'] || openbao['url']
      end
    end

    # GitLab's bundled Prometheus scrapes this node's appliance at
    # /v1/sys/metrics?format=prometheus, over the URL gitlab-ctl uses.
    def parse_scrape_config
      return unless attr('prometheus_scrape_enable')
      return unless Services.enabled?('prometheus')

      existing = Array(Gitlab['prometheus']['scrape_configs'])
      if existing.any? { |c| (c['job_name'] || c[:job_name]) == SCRAPE_JOB_NAME }
        LoggingHelper.warning("Not creating a default #{SCRAPE_JOB_NAME} scrape_config due to a pre-existing configuration")
        return
      end

      default_scrape_configs = [] << scrape_config << existing
      Gitlab['prometheus']['scrape_configs'] = default_scrape_configs.compact.flatten
    end

    def scrape_config
      geo_node = nested('geo', 'enable') ? SecretsApplianceHelper.geo_node(geo_topology, attr('node_id')) : nil
      api_addr = SecretsApplianceHelper.api_addr(attr('api_addr'), attr('listen_address'), attr('tls_disable'), Gitlab['node']['fqdn'], geo_node)
      uri = URI(SecretsApplianceHelper.ctl_address(attr('ctl_address'), api_addr, attr('listen_address'), attr('tls_disable')))
      config = {
        'job_name' => SCRAPE_JOB_NAME,
        'scheme' => uri.scheme,
        'metrics_path' => METRICS_PATH,
        'params' => { 'format' => ['prometheus'] },
        'static_configs' => [{ 'targets' => ["#{uri.host}:#{uri.port}"] }]
      }
      if uri.scheme == 'https'
        tls = { 'ca_file' => attr('ca_cert_file'), 'server_name' => attr('prometheus_scrape_tls_server_name') }.compact
        config['tls_config'] = tls unless tls.empty?
      end
      credentials = attr('prometheus_scrape_credentials_file')
      config['authorization'] = { 'type' => 'Bearer', 'credentials_file' => credentials } unless blank?(credentials)
      config
    end

    private

    def user_config
      Gitlab['gitlab_secrets_appliance']
    end

    def node_config
      Gitlab['node']['gitlab_secrets_appliance']
    end

    def attr(key)
      configured = user_config[key]
      return configured unless configured.nil?

      node_config[key]
    end

    def nested(block, key)
      configured = (user_config[block] || {})[key]
      return configured unless configured.nil?

      (node_config[block] || {})[key]
    end

    # Sets gitlab.rb's value of block/key unless gitlab.rb or the
    # attributes give one.
    def default_nested(block, key)
      return unless nested(block, key).nil?

      value = yield
      return if value.nil?

      user_config[block] ||= {}
      user_config[block][key] = value
    end

    def blank?(value)
      SecretsApplianceHelper.blank?(value)
    end
  end
end
