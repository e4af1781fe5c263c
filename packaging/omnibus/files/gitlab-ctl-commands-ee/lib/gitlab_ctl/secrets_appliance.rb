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

require 'optparse'

# GitlabCtl::Util: omnibus-ctl's lib/gitlab_ctl, which the command file
# (secrets_appliance.rb) requires first, as patroni.rb and geo.rb do.

module GitlabCtl
  # `gitlab-ctl secrets-appliance <subcommand> [options]`: runs
  # gitlab-secrets-appliance against this node's appliance, at the address
  # reconfigure recorded in /var/opt/gitlab/public_attributes.json, with
  # the operator's terminal (prompts for shares and tokens, and the
  # one-time output of init, go straight through). The subcommand's options
  # are the binary's, passed on as they are.
  #
  # Exit codes: the binary's (0 success, status: unsealed; 1 failed; 2
  # sealed or not initialized; 3 invalid configuration; 4 no appliance
  # answered; 5 a damaged or missing file in the data dir; 64 usage); 3 when
  # the appliance is not enabled on this node; 64 for a missing or unknown
  # subcommand (with the usage on stderr), as the binary says for its own
  # usage errors; 128+N when the binary was killed by signal N.
  class SecretsAppliance
    CATEGORY = 'secrets-appliance'.freeze
    COMMAND = 'secrets-appliance'.freeze
    BINARY = 'embedded/bin/gitlab-secrets-appliance'.freeze
    EXIT_FAILED = 1
    # Exit code when this node has no appliance configured (reconfigure
    # has not run with gitlab_secrets_appliance['enable'] = true).
    EXIT_NOT_CONFIGURED = 3
    EXIT_USAGE = 64
    # Tells the binary it runs for `gitlab-ctl secrets-appliance`: its
    # hints then name gitlab-ctl's commands (the rolling restart's "run
    # `gitlab-ctl secrets-appliance unseal` on <node>'s host"), not its own.
    WRAPPER_ENV = { 'GITLAB_SECRETS_APPLIANCE_WRAPPER' => 'gitlab-ctl' }.freeze

    # A missing or unknown subcommand, said as it is (OptionParser's own
    # errors start with their reason: "invalid option: -x").
    class UsageError < OptionParser::ParseError
      def message
        args.join(' ')
      end
    end

    # Where a subcommand runs: :online against the running node's API
    # (--address, --ca-cert); :offline on this node's data dir with its
    # appliance stopped (--config); :local on nothing of the node's (a
    # file). `offline_if`: the flag that makes an online subcommand
    # offline, `online_if` the reverse.
    Subcommand = Struct.new(:words, :mode, :description, :offline_if, :online_if, keyword_init: true)

    SUBCOMMANDS = {
      'init' => Subcommand.new(words: %w[init], mode: :online,
                               description: 'Initialize the cluster: prints the unseal shares, recovery keys and root token once'),
      'unseal' => Subcommand.new(words: %w[unseal], mode: :online,
                                 description: "Submit one Shamir unseal share to this node (prompt or standard input)"),
      'status' => Subcommand.new(words: %w[status], mode: :online,
                                 description: "Show this node: exit 0 unsealed, 2 sealed or not initialized, 4 not answering"),
      'bootstrap' => Subcommand.new(words: %w[gitlab bootstrap], mode: :online,
                                    description: "Create or update GitLab Rails' login to the appliance"),
      'check' => Subcommand.new(words: %w[check], mode: :offline,
                                description: "Verify this node's data dir (stopped node); --set-aside moves damaged Raft data aside"),
      'snapshot save' => Subcommand.new(words: %w[snapshot save], mode: :online,
                                        description: 'Save a Raft snapshot (every secret, encrypted) from the active node into FILE'),
      'snapshot inspect' => Subcommand.new(words: %w[snapshot inspect], mode: :local,
                                           description: 'Say what a snapshot file holds (offline; nothing secret)'),
      'snapshot restore' => Subcommand.new(words: %w[snapshot restore], mode: :online, offline_if: 'new-cluster',
                                           description: 'Restore a snapshot into the cluster (--new-cluster: rebuild a cluster from it on a stopped node)'),
      'geo status' => Subcommand.new(words: %w[geo status], mode: :online,
                                     description: "Show the Geo sites as the active node sees them: each node's site, vote, lag"),
      'geo promote' => Subcommand.new(words: %w[geo promote], mode: :online, offline_if: 'force',
                                      description: 'Make a Geo site the primary: planned switchover (--site NAME), or disaster promotion on a stopped node (--force --fenced-site OLD)'),
      'geo rejoin' => Subcommand.new(words: %w[geo rejoin], mode: :offline,
                                     description: 'Set aside the Raft data of a node a disaster promotion left behind (stopped node; --yes)'),
      'drill' => Subcommand.new(words: %w[drill], mode: :offline, online_if: 'live',
                                description: 'Rehearse a Geo failover: offline from a snapshot, or --live as a switchover and back'),
      'rolling-restart' => Subcommand.new(words: %w[rolling-restart], mode: :online,
                                          description: 'Restart every node one at a time (after an upgrade); nodes without an HSM wait for shares')
    }.freeze

    # Subcommands of two words: the first word alone.
    GROUPS = SUBCOMMANDS.keys.select { |k| k.include?(' ') }.map { |k| k.split.first }.uniq.freeze

    def self.usage
      lines = SUBCOMMANDS.map { |name, sc| format('  %-18s %s', name, sc.description) }
      <<~USAGE
        Usage:
          gitlab-ctl #{COMMAND} [options] <subcommand> [subcommand options]

        GLOBAL OPTIONS:
          -h, --help      Usage help

        SUBCOMMANDS:
        #{lines.join("\n")}

        Each subcommand's options are gitlab-secrets-appliance's: `gitlab-ctl #{COMMAND} <subcommand> --help`.
        Exit codes: gitlab-secrets-appliance's (0 success, 1 failed, 2 sealed or not initialized, 3 invalid
        configuration, 4 no appliance answered, 5 damaged data dir, 64 usage); 3 when the appliance is not
        enabled on this node; 64 for a missing or unknown subcommand.
      USAGE
    end

    # Parses ARGV as omnibus-ctl gives it (['gitlab', DIR, 'secrets-appliance',
    # ...] or any prefix up to the command's name): global options, the
    # subcommand (one or two words), and the rest, for the binary. Raises
    # UsageError (an OptionParser::ParseError) on a missing or unknown
    # subcommand, OptionParser's errors on an unknown global option.
    def self.parse_options(args)
      args = args.dup
      loop do
        arg = args.shift
        raise UsageError, "#{COMMAND}: not called as gitlab-ctl #{COMMAND}" if arg.nil?
        break if arg == COMMAND
      end

      options = {}
      OptionParser.new do |opts|
        opts.banner = "gitlab-ctl #{COMMAND} [options] <subcommand> [subcommand options]"
        opts.on('-h', '--help', 'Usage help') { options[:help] = true }
      end.order!(args)
      return options if options[:help]

      name = args.shift
      raise UsageError, "#{COMMAND}: no subcommand given" if name.nil? || name.empty?

      if GROUPS.include?(name)
        word = args.shift
        raise UsageError, "#{COMMAND} #{name}: no subcommand given (#{subcommands_of(name)})" if word.nil? || word.start_with?('-')

        name = "#{name} #{word}"
      end
      raise UsageError, "#{COMMAND}: unknown subcommand #{name}" unless SUBCOMMANDS.key?(name)

      options.merge(command: name, args: args)
    end

    def self.subcommands_of(group)
      SUBCOMMANDS.keys.select { |k| k.start_with?("#{group} ") }.map { |k| k.split.last }.join(', ')
    end

    # Whether the binary's arguments set a bool flag: -name, --name,
    # --name=true (Go's flag syntax), up to a bare --.
    def self.flag?(args, name)
      args.take_while { |a| a != '--' }.any? do |a|
        m = a.match(/\A--?#{Regexp.escape(name)}(?:=(.*))?\z/)
        m && (m[1].nil? || %w[true 1 t T TRUE True].include?(m[1]))
      end
    end

    def initialize(base_path, attributes = nil)
      @base_path = base_path
      @attributes = attributes
    end

    def binary
      File.join(@base_path, BINARY)
    end

    # Runs a parsed subcommand; returns the exit code.
    def execute(options)
      sc = SUBCOMMANDS.fetch(options[:command])
      args = options[:args] || []
      mode = sc.mode
      mode = :offline if sc.offline_if && self.class.flag?(args, sc.offline_if)
      mode = :online if sc.online_if && self.class.flag?(args, sc.online_if)
      case mode
      when :online then run(sc.words, args)
      when :offline then run_offline(sc.words, args)
      else run_local(sc.words, args)
      end
    end

    # subcommand: the binary's words (["gitlab", "bootstrap"]); args: what
    # the operator added after the subcommand, passed on as is (later flags
    # win, so --address can be overridden).
    def run(subcommand, args = [])
      settings = enabled_settings
      return EXIT_NOT_CONFIGURED unless settings

      execute_command(command(subcommand, settings, args))
    end

    # The offline commands (geo promote --force, geo rejoin, check) work on this
    # node's data dir, with its appliance stopped: they get the config file
    # reconfigure rendered instead of an address.
    def run_offline(subcommand, args = [])
      settings = enabled_settings
      return EXIT_NOT_CONFIGURED unless settings

      execute_command([binary, *subcommand, '--config', settings['config_file'], *Array(args)])
    end

    # Commands that need neither the node's address nor its config
    # (snapshot inspect works on a file).
    def run_local(subcommand, args = [])
      return EXIT_NOT_CONFIGURED unless enabled_settings

      execute_command([binary, *subcommand, *Array(args)])
    end

    def command(subcommand, settings, args)
      cmd = [binary, *subcommand, '--address', settings['ctl_address']]
      cmd.push('--ca-cert', settings['ca_cert_file']) unless settings['ca_cert_file'].to_s.empty?
      cmd + Array(args)
    end

    private

    # This node's public settings, or nil (and what to do, on stderr) when
    # the appliance is not enabled here.
    def enabled_settings
      settings = (@attributes || GitlabCtl::Util.get_public_node_attributes)['gitlab_secrets_appliance']
      return settings if settings && settings['enable']

      $stderr.puts "The secrets appliance is not enabled on this node: set gitlab_secrets_appliance['enable'] = true " \
                   "in /etc/gitlab/gitlab.rb and run gitlab-ctl reconfigure."
      nil
    end

    def execute_command(cmd)
      pid = Process.spawn(WRAPPER_ENV, *cmd)
      status = wait(pid)
      status.exited? ? status.exitstatus : 128 + status.termsig.to_i
    rescue SystemCallError => e
      $stderr.puts "Cannot run #{cmd.first}: #{e.message}"
      EXIT_FAILED
    end

    # Ctrl-C reaches the binary too (same process group); wait for it to
    # finish on its own rather than leave it behind.
    def wait(pid)
      Process.wait2(pid).last
    rescue Interrupt
      retry
    end
  end
end
