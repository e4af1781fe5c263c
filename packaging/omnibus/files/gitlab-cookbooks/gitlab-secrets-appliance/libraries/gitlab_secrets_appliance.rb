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
# so it runs before gitlab_rails' settings are rendered and before
# Prometheus (priority 21), whose parse_scrape_configs asks scrape_config
# for this node's job (gitlab_secrets_appliance_scrape_config, as it does
# for registry, gitaly and the exporters).
module GitlabSecretsAppliance
  SCRAPE_JOB_NAME = 'gitlab-secrets-appliance'.freeze
  METRICS_PATH = '/v1/sys/metrics'.freeze
  OAK_OPENBAO_ERROR = "gitlab_secrets_appliance['enable'] and oak['components']['openbao']['enable'] are both set in /etc/gitlab/gitlab.rb: " \
                      "GitLab talks to one OpenBao (gitlab_rails['openbao']['url']), either the secrets appliance on its own nodes or " \
                      "the OpenBao that OAK runs in Kubernetes, never both. Set one of them to false and run gitlab-ctl reconfigure.".freeze
  # Keys of the geo block before the topology: a site's name alone cannot
  # place the nodes.
  REMOVED_GEO_KEYS = %w[site primary_site].freeze

  class << self
    def parse_variables
      return unless attr('enable')

      parse_oak
      parse_metrics_listener
      parse_geo
      parse_rails_url
      parse_gitlab
    end

    # The bundled OpenBao (OAK: OpenBao in Kubernetes beside the Linux
    # package, fronted by its NGINX) is a second OpenBao for the same
    # GitLab: refused, with one message, unless OAK itself is off.
    def parse_oak
      oak = Gitlab['oak'] || {}
      return if oak['enable'] == false
      return unless (oak['components'] || {}).dig('openbao', 'enable')

      raise OAK_OPENBAO_ERROR
    end

    # The loopback metrics listener serves the whole API without TLS: on a
    # node whose API listener demands client certificates it would let
    # local processes past that demand. There it is rendered only when
    # gitlab.rb asks for it.
    def parse_metrics_listener
      return unless attr('tls_require_client_cert') && !attr('tls_disable')
      return unless user_config['metrics_listen_address'].nil?

      user_config['metrics_listen_address'] = false
      LoggingHelper.warning("gitlab_secrets_appliance['tls_require_client_cert'] is set: the loopback metrics listener (plain HTTP, " \
                            "no client certificate) is not rendered. Give Prometheus a token " \
                            "(gitlab_secrets_appliance['prometheus_scrape_credentials_file']), or set " \
                            "gitlab_secrets_appliance['metrics_listen_address'] to accept local processes without a client certificate.")
    end

    # GitLab Rails reaches the appliance at gitlab_rails['openbao']['url']:
    # unless gitlab.rb sets it, this node's API URL. In a cluster every
    # node's GitLab should use the same URL (it is also the audience of
    # GitLab's tokens, which the JWT role binds): say so.
    def parse_rails_url
      rails = Gitlab['gitlab_rails']
      openbao = rails['openbao'] || {}
      return unless blank?(openbao['url'])

      url = api_url
      rails['openbao'] = openbao.merge('url' => url)
      return unless nested('geo', 'enable') || !Array(nested('raft', 'retry_join')).empty?

      LoggingHelper.warning("gitlab_rails['openbao']['url'] is not set: GitLab on this node uses this node's secrets appliance at #{url}. " \
                            "In a cluster, set gitlab_rails['openbao']['url'] to the same URL on every node (a name every node's certificate " \
                            "holds, or a load balancer): GitLab's tokens carry it as their audience, and the role accepts one.")
    end

    # This node's API URL: api_addr (or its Geo entry's), else the listener
    # (127.0.0.1 for a wildcard address without an FQDN).
    def api_url
      api_addr = SecretsApplianceHelper.api_addr(attr('api_addr'), attr('listen_address'), attr('tls_disable'), Gitlab['node']['fqdn'], geo_node)
      SecretsApplianceHelper.ctl_address(nil, api_addr, attr('listen_address'), attr('tls_disable'))
    end

    def geo_node
      nested('geo', 'enable') ? SecretsApplianceHelper.geo_node(geo_topology, attr('node_id')) : nil
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

    # This node's scrape job for GitLab's bundled Prometheus, or nil:
    # what Prometheus.parse_scrape_configs adds (the omnibus-gitlab change
    # in packaging/omnibus/README.md). With a token file, the API listener
    # with that token; else the loopback metrics listener; else, when the
    # operator let the API listener serve metrics without a token, that;
    # else none (a warning says what to set). A job of the same name in
    # prometheus['scrape_configs'] wins.
    def scrape_config
      return nil unless attr('enable') && attr('prometheus_scrape_enable')

      existing = Array(Gitlab['prometheus']['scrape_configs'])
      if existing.any? { |c| (c['job_name'] || c[:job_name]) == SCRAPE_JOB_NAME }
        LoggingHelper.warning("Not creating a default #{SCRAPE_JOB_NAME} scrape_config due to a pre-existing configuration")
        return nil
      end

      credentials = attr('prometheus_scrape_credentials_file')
      metrics_address = SecretsApplianceHelper.metrics_listen_address(attr('metrics_listen_address'))
      if blank?(credentials) && !blank?(metrics_address)
        return job('http', metrics_address)
      elsif blank?(credentials) && !attr('unauthenticated_metrics_access')
        LoggingHelper.warning("Prometheus does not scrape the secrets appliance: gitlab_secrets_appliance['metrics_listen_address'] is not set " \
                              "and the API listener serves metrics only with a token. Set metrics_listen_address (loopback) or " \
                              "prometheus_scrape_credentials_file, or prometheus_scrape_enable = false to silence this.")
        return nil
      end

      uri = URI(SecretsApplianceHelper.ctl_address(attr('ctl_address'), api_url_for_ctl, attr('listen_address'), attr('tls_disable')))
      config = job(uri.scheme, "#{uri.host}:#{uri.port}")
      if uri.scheme == 'https'
        tls = { 'ca_file' => attr('ca_cert_file'), 'server_name' => attr('prometheus_scrape_tls_server_name') }.compact
        config['tls_config'] = tls unless tls.empty?
      end
      config['authorization'] = { 'type' => 'Bearer', 'credentials_file' => credentials } unless blank?(credentials)
      config
    end

    def job(scheme, target)
      {
        'job_name' => SCRAPE_JOB_NAME,
        'scheme' => scheme,
        'metrics_path' => METRICS_PATH,
        'params' => { 'format' => ['prometheus'] },
        'static_configs' => [{ 'targets' => [target] }]
      }
    end

    def api_url_for_ctl
      SecretsApplianceHelper.api_addr(attr('api_addr'), attr('listen_address'), attr('tls_disable'), Gitlab['node']['fqdn'], geo_node)
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
