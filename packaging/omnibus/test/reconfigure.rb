# A miniature `gitlab-ctl reconfigure` for the gitlab-secrets-appliance
# cookbook, for tests on a machine without Omnibus GitLab or Chef.
#
# It does what Omnibus does, in the same order, with the cookbook's real
# files: evaluates attributes/default.rb, reads a gitlab.rb, runs the
# cookbook's library (GitlabSecretsAppliance.parse_variables), merges the
# gitlab.rb settings over the defaults as normal attributes, evaluates the
# recipe (enable or disable), and applies the resources it declares to the
# paths they name: directories, files and templates (rendered with Ruby's
# ERB) as Chef writes them (verify blocks first, on a staged copy with the
# same extension; then an atomic rename; unchanged content is left
# alone), env_dir, ruby_block, runit_service (its sv-*-run, log/run and
# log/config templates), version_file. Owners are applied only when run as
# root. It then writes public_attributes.json as Omnibus' Attributes
# handler does, and prints a JSON report of the run on standard output.
#
# Only what the cookbook uses is provided; anything else fails loudly.
#
#   ruby reconfigure.rb --cookbook DIR --gitlab-rb FILE --install-dir DIR \
#     --sv-dir DIR --public-attributes FILE [--node-name NAME] [--fqdn FQDN] \
#     [--gitlab-cluster-json FILE] [--up-services gitlab-secrets-appliance]
#
# Resources take only the properties Chef's resources have (a typo is an
# error, as in Chef). A resource that changed something runs its delayed
# notifications at the end, once each, as Chef does; --up-services says
# which services run (a restart of one that does not starts it), and the
# report lists what was updated and which notifications ran.

require 'erb'
require 'etc'
require 'fileutils'
require 'json'
require 'optparse'
require 'securerandom'
# Omnibus' own classes the cookbook calls (Gitlab, Services, OmnibusHelper,
# AccountHelper, LogfilesHelper, Prometheus...).
require_relative 'lib/omnibus'

opts = { node_name: 'gitlab.example.com', fqdn: 'gitlab.example.com' }
OptionParser.new do |o|
  o.on('--cookbook DIR') { |v| opts[:cookbook] = v }
  o.on('--gitlab-rb FILE') { |v| opts[:gitlab_rb] = v }
  o.on('--install-dir DIR') { |v| opts[:install_dir] = v }
  o.on('--sv-dir DIR') { |v| opts[:sv_dir] = v }
  o.on('--public-attributes FILE') { |v| opts[:public_attributes] = v }
  o.on('--node-name NAME') { |v| opts[:node_name] = v }
  o.on('--fqdn FQDN') { |v| opts[:fqdn] = v }
  o.on('--gitlab-cluster-json FILE') { |v| opts[:gitlab_cluster_json] = v }
  o.on('--up-services LIST') { |v| opts[:up_services] = v.split(',') }
end.parse!
%i[cookbook gitlab_rb install_dir sv_dir public_attributes].each do |k|
  abort "reconfigure.rb: --#{k.to_s.tr('_', '-')} is required" unless opts[k]
end

def vivid_hash
  Hash.new { |h, k| h[k] = vivid_hash }
end

# A deep copy without default procs: reading a missing key gives nil, as a
# ConfigMash does outside auto_vivify.
def plain(value)
  case value
  when Hash then value.each_with_object({}) { |(k, v), h| h[k.to_s] = plain(v) }
  when Array then value.map { |v| plain(v) }
  else value
  end
end

def deep_merge(base, over)
  return plain(over) unless base.is_a?(Hash) && over.is_a?(Hash)

  out = plain(base)
  over.each { |k, v| out[k.to_s] = out.key?(k.to_s) ? deep_merge(out[k.to_s], v) : plain(v) }
  out
end

# Chef's node: default and normal attributes, read merged.
class Node
  attr_reader :name, :default
  attr_accessor :normal

  def initialize(name)
    @name = name
    @default = vivid_hash
    @normal = {}
  end

  def merged
    deep_merge(@default, @normal)
  end

  def [](key)
    merged[key.to_s]
  end

  def dig(*keys)
    merged.dig(*keys.map(&:to_s))
  end
end

# An attribute file's context: `default[...] = ...` and `node`.
class AttributeContext
  def initialize(node)
    @node = node
  end

  attr_reader :node

  def default
    @node.default
  end
end

# gitlab.rb's context: `name['key'] = value` and `external_url 'URL'`,
# auto-vivified while the file is read (Gitlab::ConfigMash.auto_vivify).
class GitlabRbContext
  def initialize
    @settings = {}
  end

  attr_reader :settings

  def method_missing(name, *args)
    key = name.to_s
    return super if key.end_with?('=', '?', '!')
    return @settings[key] = args.first if args.size == 1

    @settings[key] ||= vivid_hash
  end

  def respond_to_missing?(_name, _include_private = false)
    true
  end
end

GitlabCluster::JSON_FILE = opts[:gitlab_cluster_json] || '/etc/gitlab/gitlab-cluster.json'

# One declared resource: its properties as the block set them.
class Resource
  BLOCK_PROPERTIES = %i[verify only_if not_if block].freeze
  # The properties of Chef's (and Omnibus') resources the cookbook may
  # set; any other name is a typo Chef would refuse (mdoe '0700').
  PROPERTIES = {
    account: %w[username uid ugid groupname gid shell home manage],
    directory: %w[owner group mode recursive],
    env_dir: %w[variables],
    file: %w[owner group mode content sensitive],
    ruby_block: %w[],
    template: %w[source owner group mode variables sensitive helpers],
    runit_service: %w[options log_options],
    version_file: %w[version_file_path version_check_cmd]
  }.freeze

  attr_reader :type, :name, :properties, :blocks, :notifications

  def initialize(type, name)
    @type = type
    @name = name
    @properties = { 'action' => type == :runit_service ? 'enable' : 'create' }
    @blocks = Hash.new { |h, k| h[k] = [] }
    @notifications = []
  end

  def notifies(action, target, timing = :delayed)
    @notifications << { 'action' => action.to_s, 'target' => target, 'timing' => timing.to_s }
  end

  def action(value)
    @properties['action'] = value.to_s
  end

  def method_missing(name, *args, &block)
    if BLOCK_PROPERTIES.include?(name)
      raise "#{@type}[#{@name}]: #{name} needs a block here" unless block

      @blocks[name] << block
    elsif args.size == 1 && !block
      unless PROPERTIES.fetch(@type).include?(name.to_s)
        raise "#{@type}[#{@name}]: #{name} is not a property of the #{@type} resource (known: #{PROPERTIES.fetch(@type).join(', ')})"
      end

      @properties[name.to_s] = args.first
    else
      raise "#{@type}[#{@name}]: #{name}(#{args.inspect}) is not a property this harness knows"
    end
  end

  def respond_to_missing?(_name, _include_private = false)
    true
  end

  def [](key)
    @properties[key.to_s]
  end

  def skipped?
    @blocks[:only_if].any? { |b| !b.call } || @blocks[:not_if].any?(&:call)
  end

  def report
    props = @properties.reject { |k, _| k == 'variables' }
    { 'type' => @type.to_s, 'name' => @name, 'properties' => plain(props), 'notifies' => @notifications }
  end

  def to_s
    "#{@type}[#{@name}]"
  end
end

# A recipe's context: the resources the cookbook declares.
class RecipeContext
  RESOURCES = %i[account directory env_dir file ruby_block template runit_service version_file].freeze

  attr_reader :resources, :node

  def initialize(node)
    @node = node
    @resources = []
  end

  RESOURCES.each do |type|
    define_method(type) do |name, &block|
      r = Resource.new(type, name)
      r.instance_eval(&block) if block
      @resources << r
      r
    end
  end
end

# Chef's template context: the variables as instance variables, and node.
class TemplateContext
  def initialize(node, variables)
    @node = node
    variables.each { |k, v| instance_variable_set("@#{k}", v) }
  end

  attr_reader :node

  def render_template(path)
    ERB.new(File.read(path), trim_mode: '-').result(binding)
  end

  # Chef's render of another cookbook's partial. Only Omnibus' package
  # cookbook's mount_point_check.erb is known: for each
  # high_availability['mountpoint'], a run script that refuses to start
  # while it is not a mount point.
  def render(partial, cookbook: nil)
    raise "render #{partial} from cookbook #{cookbook}: this harness knows only package's mount_point_check.erb" unless partial == 'mount_point_check.erb' && cookbook == 'package'

    [@node['high_availability']['mountpoint']].flatten.compact.map do |m|
      "if ! mountpoint -q '#{m}' ; then\n  echo 'Refusing to start because #{m} is not a mountpoint.'\n  exit 1\nfi\n"
    end.join
  end
end

# Applies resources to the file system.
class Converge
  def initialize(node, cookbook, sv_dir)
    @node = node
    @cookbook = cookbook
    @sv_dir = sv_dir
    @root = Process.uid.zero?
  end

  # Applies a resource; true if it changed anything (Chef: updated), which
  # is when its notifications run.
  def apply(resource)
    return false if resource.skipped?

    send("apply_#{resource.type}", resource) == true
  end

  # Runs a delayed notification of an updated resource, as the runit
  # cookbook's runit_service does: :hup signals a running service and
  # leaves a stopped one alone; :restart restarts it, and so starts a
  # service that was down.
  def notify(resource, notification)
    target = notification['target']
    name = target[/\Arunit_service\[(.+)\]\z/, 1] or raise "#{resource}: notifies #{target}, which this harness cannot run"
    result = case notification['action']
             when 'hup' then OmnibusHelper.new(@node).service_up?(name) ? 'sent SIGHUP' : 'not running: nothing to do'
             when 'restart' then OmnibusHelper.new(@node).service_up?(name) ? 'restarted' : 'started (it was down)'
             else raise "#{resource}: notifies #{notification['action']}, which this harness cannot run"
             end
    notification.merge('resource' => resource.to_s, 'result' => result)
  end

  private

  def apply_account(r)
    %w[username groupname].each do |k|
      next if r[k].nil?

      k == 'username' ? Etc.getpwnam(r[k]) : Etc.getgrnam(r[k])
    rescue ArgumentError
      raise "account[#{r.name}]: #{k} #{r[k]} does not exist; this harness creates no accounts: give an existing one"
    end
  end

  def apply_directory(r)
    before = stat_of(r.name)
    FileUtils.mkdir_p(r.name)
    set_mode_owner(r.name, r)
    before != stat_of(r.name)
  end

  def apply_file(r)
    if r['action'] == 'delete'
      existed = File.exist?(r.name)
      FileUtils.rm_f(r.name)
      return existed
    end
    if r.properties.key?('content')
      install(r.name, r['content'].to_s, r)
    else
      before = stat_of(r.name)
      set_mode_owner(r.name, r)
      before != stat_of(r.name)
    end
  end

  def stat_of(path)
    st = File.stat(path)
    [st.mode, st.uid, st.gid]
  rescue Errno::ENOENT
    nil
  end

  def apply_ruby_block(r)
    r.blocks[:block].each(&:call)
  end

  def apply_env_dir(r)
    FileUtils.mkdir_p(r.name)
    vars = (r['variables'] || {}).transform_keys(&:to_s)
    changed = false
    Dir.children(r.name).each do |f|
      next if vars.key?(f)

      FileUtils.rm_f(File.join(r.name, f))
      changed = true
    end
    vars.each do |k, v|
      path = File.join(r.name, k)
      next if File.exist?(path) && File.read(path) == v.to_s

      File.write(path, v.to_s)
      changed = true
    end
    changed
  end

  def apply_template(r)
    content = render(r['source'], r['variables'] || {})
    install(r.name, content, r)
  end

  def apply_version_file(r)
    out = IO.popen(r['version_check_cmd'], err: %i[child out], &:read)
    raise "version_file[#{r.name}]: #{r['version_check_cmd']} failed:\n#{out}" unless $?.success?

    return false if File.exist?(r['version_file_path']) && File.read(r['version_file_path']) == out

    File.write(r['version_file_path'], out)
    true
  end

  def apply_runit_service(r)
    dir = File.join(@sv_dir, r.name)
    return FileUtils.rm_f(File.join(dir, 'run.enabled')) if r['action'] == 'disable'

    options = r['options'] || {}
    FileUtils.mkdir_p(File.join(dir, 'log'))
    write(File.join(dir, 'run'), render("sv-#{r.name}-run.erb", { options: options }), 0o755)
    write(File.join(dir, 'log', 'run'), render("sv-#{r.name}-log-run.erb", { options: options }), 0o755)
    write(File.join(dir, 'log', 'config'), render("sv-#{r.name}-log-config.erb", r['log_options'] || {}), 0o644)
    link = File.join(options[:log_directory], 'config')
    FileUtils.rm_f(link)
    File.symlink(File.join(dir, 'log', 'config'), link)
    false
  end

  def render(source, variables)
    TemplateContext.new(@node, variables).render_template(File.join(@cookbook, 'templates', 'default', source))
  end

  # Verify blocks see a staged copy beside the target, with its extension
  # (Chef keeps it so that a verifier can tell the file's type). As Chef's
  # file providers do, unchanged content is not rewritten (its
  # modification time stays) and new content replaces the file at once
  # (a rename): a running service that watches the file never reads half.
  def install(path, content, r)
    if File.exist?(path) && File.binread(path) == content
      before = stat_of(path)
      set_mode_owner(path, r)
      return before != stat_of(path)
    end
    unless r.blocks[:verify].empty?
      ext = File.extname(path)
      staged = File.join(File.dirname(path), ".chef-#{File.basename(path, ext)}#{SecureRandom.hex(4)}#{ext}")
      File.write(staged, content, perm: 0o600)
      begin
        r.blocks[:verify].each do |b|
          raise "#{r.type}[#{path}] failed verification" unless b.call(staged)
        end
      ensure
        FileUtils.rm_f(staged)
      end
    end
    tmp = File.join(File.dirname(path), ".chef-#{File.basename(path)}#{SecureRandom.hex(4)}")
    begin
      File.write(tmp, content, perm: 0o600)
      File.chmod(File.exist?(path) ? File.stat(path).mode & 0o7777 : 0o666 & ~File.umask, tmp) unless r['mode']
      set_mode_owner(tmp, r)
      File.rename(tmp, path)
    ensure
      FileUtils.rm_f(tmp)
    end
    true
  end

  def write(path, content, mode)
    File.write(path, content)
    File.chmod(mode, path)
  end

  def set_mode_owner(path, r)
    File.chmod(r['mode'].to_i(8), path) if r['mode']
    FileUtils.chown(r['owner'], r['group'], path) if @root && (r['owner'] || r['group'])
  end
end

cookbook = File.expand_path(opts[:cookbook])
node = Node.new(opts[:node_name])
# What Omnibus' own cookbooks (package, gitlab, runit) and Ohai give.
node.default['fqdn'] = opts[:fqdn]
node.default['package']['install-dir'] = opts[:install_dir]
node.default['runit']['sv_dir'] = opts[:sv_dir]
node.default['gitlab']['manage_accounts']['enable'] = true
node.default['gitlab']['user']['username'] = 'git'
node.default['gitlab']['user']['group'] = 'git'
node.default['gitlab']['logging']['svlogd_size'] = 200 * 1024 * 1024
node.default['gitlab']['logging']['svlogd_num'] = 30
node.default['gitlab']['logging']['svlogd_timeout'] = 24 * 60 * 60
node.default['gitlab']['logging']['svlogd_filter'] = 'gzip'
node.default['gitlab']['logging']['svlogd_udp'] = nil
node.default['gitlab']['logging']['svlogd_prefix'] = nil
node.default['gitlab']['logging']['log_group'] = nil
# omnibus-gitlab's logrotate defaults (gitlab cookbook, attributes/default.rb).
node.default['gitlab']['logging']['logrotate_frequency'] = 'daily'
node.default['gitlab']['logging']['logrotate_maxsize'] = nil
node.default['gitlab']['logging']['logrotate_size'] = nil
node.default['gitlab']['logging']['logrotate_rotate'] = 30
node.default['gitlab']['logging']['logrotate_compress'] = 'compress'
node.default['gitlab']['logging']['logrotate_method'] = 'copytruncate'
node.default['gitlab']['logging']['logrotate_postrotate'] = nil
node.default['gitlab']['logging']['logrotate_dateformat'] = nil

# Chef loads a cookbook's libraries, then its attribute files.
Dir[File.join(cookbook, 'libraries', '*.rb')].sort.each { |f| require f }
AttributeContext.new(node).instance_eval(File.read(File.join(cookbook, 'attributes', 'default.rb')), File.join(cookbook, 'attributes', 'default.rb'))

rb = GitlabRbContext.new
rb.instance_eval(File.read(opts[:gitlab_rb]), opts[:gitlab_rb])
rb.settings.each { |k, v| Gitlab[k] = plain(v) }
Gitlab.node = node

# Omnibus parses each block in priority order: gitlab_secrets_appliance
# (20) before Prometheus (21).
GitlabSecretsAppliance.parse_variables
Prometheus.parse_scrape_configs

node.default['high_availability']['mountpoint'] = nil
node.normal = {
  'gitlab_secrets_appliance' => Gitlab['gitlab_secrets_appliance'],
  'monitoring' => { 'prometheus' => Gitlab['prometheus'] },
  'high_availability' => Gitlab['high_availability'],
  'gitlab' => { 'gitlab_rails' => Gitlab['gitlab_rails'] }
}

OmnibusHelper.sv_dir = opts[:sv_dir]
OmnibusHelper.up_services = opts[:up_services] || []
recipe = node['gitlab_secrets_appliance']['enable'] ? 'enable' : 'disable'
ctx = RecipeContext.new(node)
path = File.join(cookbook, 'recipes', "#{recipe}.rb")
ctx.instance_eval(File.read(path), path)
converge = Converge.new(node, cookbook, opts[:sv_dir])
updated = ctx.resources.select { |r| converge.apply(r) }
# Chef runs each delayed notification once, at the end of the run.
pending = updated.flat_map { |r| r.notifications.map { |n| [r, n] } }.uniq { |_, n| [n['action'], n['target']] }
notifications_run = pending.map { |r, n| converge.notify(r, n) }

public_attributes = {}
BaseHelper.descendants.each do |klass|
  public_attributes = deep_merge(public_attributes, klass.new(node).public_attributes)
end
File.open(opts[:public_attributes], 'w', 0o644) { |f| f.puts public_attributes.to_json }

puts JSON.pretty_generate(
  'recipe' => recipe,
  'resources' => ctx.resources.map(&:report),
  'warnings' => LoggingHelper.messages,
  'prometheus_scrape_configs' => plain(Gitlab['prometheus']['scrape_configs'] || []),
  # GitLab Rails' OpenBao settings (gitlab.yml's openbao), as reconfigure
  # leaves them.
  'gitlab_rails_openbao' => plain(Gitlab['gitlab_rails']['openbao']),
  # The accounts `gitlab-ctl remove-accounts` removes (AccountHelper).
  'accounts' => { 'users' => AccountHelper.new(node).users, 'groups' => AccountHelper.new(node).groups },
  'updated' => updated.map(&:to_s),
  'notifications_run' => notifications_run,
  # What Omnibus' logrotate cookbook renders for this service
  # (LogfilesHelper#logging_options: gitlab.rb's logging merged with the
  # service's settings).
  'logrotate' => {
    'log_directory' => node['gitlab_secrets_appliance']['log_directory'],
    'options' => plain(node['gitlab']['logging'].to_hash.merge(node['gitlab_secrets_appliance'].to_hash)
                         .select { |k, _| k.to_s.start_with?('logrotate_') })
  }
)
