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

# gitlab-ctl secrets-appliance-snapshot-restore FILE [--yes] [--token-file FILE]
# Restores a snapshot of this cluster (checked before anything is sent; asks first unless --yes).
# gitlab-ctl secrets-appliance-snapshot-restore FILE --new-cluster
# Offline, on a stopped node with an empty data dir: the first node of a new cluster holding the snapshot.
add_command_under_category "secrets-appliance-snapshot-restore", GitlabCtl::SecretsAppliance::CATEGORY, "Restore a Raft snapshot into the secrets appliance's cluster (or, with --new-cluster on a stopped node, rebuild a cluster from it)", 2 do |_cmd_name, *_args|
  args = ARGV[3..] || []
  ctl = GitlabCtl::SecretsAppliance.new(base_path)
  Kernel.exit(args.include?('--new-cluster') ? ctl.run_offline(%w[snapshot restore], args) : ctl.run(%w[snapshot restore], args))
end
