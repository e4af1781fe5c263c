# Stand-ins for the parts of omnibus-gitlab that the cookbook calls, for
# the miniature reconfigure (reconfigure.rb). Each says which omnibus-gitlab
# file it stands for; each has the behaviour the cookbook relies on, with
# the additions the integration's merge request makes to those files
# (marked "MR:"; packaging/omnibus/README.md lists them). Written for these
# tests, not copied: only what the cookbook uses.

# Omnibus' Gitlab config object (Mixlib::Config + SettingsDSL): gitlab.rb's
# settings by top-level key; every registered block reads as a Hash.
module Gitlab
  SCALARS = %w[external_url].freeze

  class << self
    attr_accessor :node

    def config
      @config ||= {}
    end

    def [](key)
      key = key.to_s
      return node if key == 'node'
      return config[key] if config.key?(key) || SCALARS.include?(key)

      config[key] = {}
    end

    def []=(key, value)
      config[key.to_s] = value
    end
  end
end

module LoggingHelper
  def self.messages
    @messages ||= []
  end

  def self.warning(message)
    messages << message
    $stderr.puts "WARNING: #{message}"
  end

  def self.deprecation(message)
    messages << message
    $stderr.puts "DEPRECATION: #{message}"
  end
end

# Omnibus' GitlabCluster (package/libraries/gitlab_cluster.rb): the
# cluster-wide overrides `gitlab-ctl geo promote` records, in JSON_FILE.
# reconfigure.rb sets JSON_FILE.
class GitlabCluster; end

# Omnibus' Services (package/libraries/config/services.rb): whether a
# service is enabled on this node. The services in Omnibus' default group
# (Prometheus among them) are on unless gitlab.rb turns them off;
# gitlab_secrets_appliance is in no group (MR: EEServices, `service
# 'gitlab_secrets_appliance'`), so only its own enable turns it on.
module Services
  DEFAULT_ENABLED = %w[prometheus].freeze

  def self.enabled?(name)
    value = Gitlab[name]['enable']
    value.nil? ? DEFAULT_ENABLED.include?(name) : value
  end
end

# Omnibus' BaseHelper (package/libraries/helpers/base_helper.rb).
class BaseHelper
  def initialize(node)
    @node = node
  end

  def self.descendants
    ObjectSpace.each_object(Class).select { |klass| klass < self }
  end

  def public_attributes
    {}
  end
end

# Omnibus' OmnibusHelper (package/libraries/omnibus_helper.rb). A
# service's directory is enabled when runit has it (here: its sv directory
# exists), up when the test says so (--up-services; Omnibus asks
# /opt/gitlab/init/SERVICE status), enabled when its settings, looked up
# by the service name with '-' as '_' (SettingsDSL's node attribute key),
# say so: a service whose runit name is not its settings' name has no
# settings here, and asking fails, as it does in Omnibus.
class OmnibusHelper
  class << self
    attr_accessor :sv_dir, :up_services
  end

  def initialize(node)
    @node = node
  end

  def service_dir_enabled?(name)
    File.directory?(File.join(self.class.sv_dir, name))
  end

  def service_up?(name)
    self.class.up_services.include?(name)
  end

  def service_enabled?(name)
    settings = @node[name.tr('-', '_')]
    raise NoMethodError, "undefined method `[]' for nil (node['#{name.tr('-', '_')}']: no settings for service #{name})" if settings.nil?

    settings['enable']
  end

  def should_notify?(name)
    service_dir_enabled?(name) && service_up?(name) && service_enabled?(name)
  end
end

# Omnibus' AccountHelper (gitlab/libraries/account_helper.rb): each
# service account by its settings; users and groups are what `gitlab-ctl
# remove-accounts` removes. Only the accounts these tests need, plus the
# MR's.
class AccountHelper
  attr_reader :node

  def initialize(node)
    @node = node
  end

  def gitlab_user
    node['gitlab']['user']['username']
  end

  def gitlab_group
    node['gitlab']['user']['group']
  end

  # MR: the secrets appliance's account.
  def secrets_appliance_user
    node['gitlab_secrets_appliance']['username']
  end

  def secrets_appliance_group
    node['gitlab_secrets_appliance']['group']
  end

  def users
    [gitlab_user, secrets_appliance_user]
  end

  def groups
    [gitlab_group, secrets_appliance_group]
  end
end

# Omnibus' LogfilesHelper (package/libraries/helpers/logfiles_helper.rb):
# a service's log directory and its owner, group and mode, looked up by
# the service's (hyphenated) name; its settings are node[name with '_'].
class LogfilesHelper < AccountHelper
  def default_logdir_ownership
    {
      'gitlab-kas' => { username: gitlab_user, group: gitlab_group },
      # MR:
      'gitlab-secrets-appliance' => { username: secrets_appliance_user, group: secrets_appliance_group }
    }
  end

  def service_settings(service)
    settings = node[service.tr('-', '_')]
    raise "Service #{service} is not a valid service." if settings.nil?

    settings
  end

  def log_group(service)
    service_settings(service)['log_group'] || node['gitlab']['logging']['log_group']
  end

  def logdir_owner(service)
    default_logdir_ownership.dig(service, :username) || 'root'
  end

  def logdir_mode(service)
    return '0750' if log_group(service)

    default_logdir_ownership.dig(service, :mode) || '0700'
  end

  def logging_settings(service)
    {
      log_directory: service_settings(service)['log_directory'],
      log_directory_owner: logdir_owner(service),
      log_directory_group: log_group(service),
      log_directory_mode: logdir_mode(service),
      runit_owner: 'root',
      runit_group: log_group(service),
      logrotate_group: log_group(service) || default_logdir_ownership.dig(service, :group) || 'root',
      options: node['gitlab']['logging'].to_hash.merge(service_settings(service).to_hash)
    }
  end
end

# Omnibus' Prometheus (monitoring/libraries/prometheus.rb): its
# parse_scrape_configs adds each enabled service's default job before the
# operator's prometheus['scrape_configs']. Only the MR's job here.
module Prometheus
  class << self
    def parse_scrape_configs
      return unless Services.enabled?('prometheus')

      gitlab_secrets_appliance_scrape_config
    end

    # MR:
    def gitlab_secrets_appliance_scrape_config
      return unless Services.enabled?('gitlab_secrets_appliance')

      scrape_config = GitlabSecretsAppliance.scrape_config
      return if scrape_config.nil?

      default_scrape_configs = [] << scrape_config << Gitlab['prometheus']['scrape_configs']
      Gitlab['prometheus']['scrape_configs'] = default_scrape_configs.compact.flatten
    end
  end
end
