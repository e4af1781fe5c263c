# A miniature gitlab-ctl for tests: loads the gitlab-ctl command files as
# omnibus-ctl does and runs one of them, with omnibus-ctl's semantics for
# arguments and exit codes (chef/omnibus-ctl lib/omnibus-ctl.rb: run).
#
#   ruby gitlab_ctl.rb --base-path DIR --commands DIR --public-attributes FILE -- COMMAND [ARGS...]
#
# base_path stands for /opt/gitlab (the binary is base_path/embedded/bin/
# gitlab-secrets-appliance); ARGV is what Omnibus' gitlab-ctl wrapper gives
# omnibus-ctl: ['gitlab', COMMANDS_DIR, COMMAND, ARGS...]. COMMANDS_DIR is
# omnibus-gitlab's files/gitlab-ctl-commands-ee, installed as
# base_path/embedded/service/omnibus-ctl-ee (a symlink here), beside
# omnibus-ctl (this directory: lib/gitlab_ctl.rb and GitlabCtl::Util).

require 'fileutils'
require 'optparse'

opts = {}
parser = OptionParser.new do |o|
  o.on('--base-path DIR') { |v| opts[:base_path] = v }
  o.on('--commands DIR') { |v| opts[:commands] = v }
  o.on('--public-attributes FILE') { |v| opts[:public_attributes] = v }
end
rest = parser.order(ARGV)
rest.shift if rest.first == '--'
abort 'gitlab_ctl.rb: --base-path, --commands and --public-attributes are required' unless opts.size == 3

# /opt/gitlab/embedded/service/omnibus-ctl{,-ee} as the package installs
# them; the command files require their libraries from there.
service_dir = File.join(opts[:base_path], 'embedded', 'service')
FileUtils.mkdir_p(service_dir)
{ 'omnibus-ctl' => __dir__, 'omnibus-ctl-ee' => File.expand_path(opts[:commands]) }.each do |name, target|
  link = File.join(service_dir, name)
  next if File.symlink?(link) && File.readlink(link) == target

  tmp = "#{link}.#{Process.pid}"
  File.symlink(target, tmp)
  File.rename(tmp, link)
end
require File.join(service_dir, 'omnibus-ctl', 'lib', 'gitlab_ctl')
GitlabCtl::Util.public_attributes_file = opts[:public_attributes]

# The omnibus-ctl object the command files are evaluated in.
class Ctl
  attr_reader :base_path, :command_map, :category_command_map

  def initialize(base_path)
    @base_path = base_path
    @command_map = {}
    @category_command_map = {}
  end

  def load_files(path)
    Dir["#{path}/*.rb"].sort.each { |file| eval(File.read(file), nil, file, 1) } # rubocop: disable Security/Eval
  end

  def add_command(name, description, arity = 1, &block)
    @command_map[name] = { desc: description, arity: arity }
    self.class.send(:define_method, to_method_name(name)) { |*args| block.call(*args) }
  end

  def add_command_under_category(name, category, description, arity = 1, &block)
    @category_command_map[category] ||= {}
    @category_command_map[category][name] = { desc: description, arity: arity }
    self.class.send(:define_method, to_method_name(name)) { |*args| block.call(*args) }
  end

  def log(msg)
    $stdout.puts msg
  end

  def to_method_name(name)
    name.tr('-', '_').to_sym
  end

  def retrieve_command(name)
    return @command_map[name] if @command_map.key?(name)

    @category_command_map.each_value { |cmds| return cmds[name] if cmds.key?(name) }
    nil
  end

  def run(args)
    name = args[0]
    command = retrieve_command(name)
    if command.nil?
      log "I don't know that command."
      Kernel.exit 1
    end
    if args.length > 1 && command[:arity] != 2
      log "The command #{name} does not accept any arguments"
      Kernel.exit 2
    end
    service = args[1] && args[1][0] != '-' ? args[1] : nil
    begin
      ret = send(to_method_name(name), *[name, service].compact)
    rescue SystemExit => e
      Kernel.exit e.status
    end
    Kernel.exit(ret.is_a?(Integer) ? ret : 0)
  end
end

ctl = Ctl.new(opts[:base_path])
ctl.load_files(opts[:commands])
ARGV.replace(['gitlab', opts[:commands], *rest])
ctl.run(ARGV[2..])
