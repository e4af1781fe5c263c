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

# gitlab-ctl secrets-appliance-geo-rejoin [--yes] [--format json]
# After a disaster promotion, on a node of the old primary site (it refuses to unseal and says so):
# `gitlab-ctl stop secrets-appliance`, then this, then `gitlab-ctl start secrets-appliance` and unseal.
# Its Raft data is set aside in the data dir; it joins the promoted cluster as a non-voter.
add_command_under_category "secrets-appliance-geo-rejoin", GitlabCtl::SecretsAppliance::CATEGORY, "Bring back a node a disaster promotion left behind: set its Raft data aside (stopped node; --yes) so that it joins the promoted cluster as a non-voter", 2 do |_cmd_name, *_args|
  Kernel.exit GitlabCtl::SecretsAppliance.new(base_path).run_offline(%w[geo rejoin], ARGV[3..] || [])
end
