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

# gitlab-ctl secrets-appliance-check [--format json] [--set-aside [--empty] --yes]
# Offline, with the service stopped (`gitlab-ctl stop secrets-appliance`): verify every file of the data dir and say what
# to do about a damaged one (exit 5). A node that refuses to start on a damaged data dir (exit 5 in the log) says the same.
# --set-aside --yes moves the damaged Raft data aside in the data dir (nothing is deleted) so that the node can be rebuilt.
add_command_under_category "secrets-appliance-check", GitlabCtl::SecretsAppliance::CATEGORY, "Verify this node's secrets appliance data dir, offline (stopped node); --set-aside moves damaged Raft data aside", 2 do |_cmd_name, *_args|
  Kernel.exit GitlabCtl::SecretsAppliance.new(base_path).run_offline(%w[check], ARGV[3..] || [])
end
