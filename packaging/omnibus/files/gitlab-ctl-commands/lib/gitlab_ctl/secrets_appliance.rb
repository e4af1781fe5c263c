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

require 'gitlab_ctl/util'

module GitlabCtl
  # Runs gitlab-secrets-appliance against this node's appliance, at the
  # address reconfigure recorded in /var/opt/gitlab/public_attributes.json,
  # with the operator's terminal (prompts for shares and tokens, and the
  # one-time output of init, go straight through). Returns the binary's
  # exit code: 0 success (status: unsealed), 1 failed, 2 sealed or not
  # initialized, 3 invalid configuration, 4 no appliance answered, 5 a damaged
  # or missing file in the data dir, 64 usage.
  class SecretsAppliance
    CATEGORY = 'secrets-appliance'.freeze
    BINARY = 'embedded/bin/gitlab-secrets-appliance'.freeze
    EXIT_FAILED = 1
    # Exit code when this node has no appliance configured (reconfigure
    # has not run with gitlab_secrets_appliance['enable'] = true).
    EXIT_NOT_CONFIGURED = 3

    def initialize(base_path, attributes = nil)
      @base_path = base_path
      @attributes = attributes
    end

    def binary
      File.join(@base_path, BINARY)
    end

    # subcommand: the binary's words (["gitlab", "bootstrap"]); args: what
    # the operator added after the gitlab-ctl command, passed on as is
    # (later flags win, so --address can be overridden).
    def run(subcommand, args = [])
      settings = enabled_settings
      return EXIT_NOT_CONFIGURED unless settings

      execute(command(subcommand, settings, args))
    end

    # The offline commands (geo promote --force, geo rejoin, check) work on this
    # node's data dir, with its appliance stopped: they get the config file
    # reconfigure rendered instead of an address.
    def run_offline(subcommand, args = [])
      settings = enabled_settings
      return EXIT_NOT_CONFIGURED unless settings

      execute([binary, *subcommand, '--config', settings['config_file'], *Array(args)])
    end

    # Commands that need neither the node's address nor its config
    # (snapshot inspect works on a file).
    def run_local(subcommand, args = [])
      return EXIT_NOT_CONFIGURED unless enabled_settings

      execute([binary, *subcommand, *Array(args)])
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

    def execute(cmd)
      pid = Process.spawn(*cmd)
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
