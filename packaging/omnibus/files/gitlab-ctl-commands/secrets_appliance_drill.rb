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

require 'gitlab_ctl/secrets_appliance'

# gitlab-ctl secrets-appliance-drill --unseal hsm|shares [--snapshot FILE] [--token-file FILE] [--report-dir DIR]
# Offline Geo failover drill from a snapshot on a throwaway loopback cluster, with an RTO/RPO report.
# gitlab-ctl secrets-appliance-drill --live --site NAME [--dry-run] [--token-file FILE]
# A planned switchover of the running cluster to NAME and back, behind pre-flight checks.
add_command_under_category "secrets-appliance-drill", GitlabCtl::SecretsAppliance::CATEGORY, "Rehearse a Geo failover of the secrets appliance: offline from a snapshot, or --live as a switchover and back", 2 do |_cmd_name, *_args|
  args = ARGV[3..] || []
  ctl = GitlabCtl::SecretsAppliance.new(base_path)
  Kernel.exit(args.include?('--live') ? ctl.run(%w[drill], args) : ctl.run_offline(%w[drill], args))
end
