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

# gitlab-ctl secrets-appliance-rolling-restart [--token-file F] [--node-timeout 15m]
# After `gitlab-ctl upgrade` on every node: restarts the nodes of the
# cluster one at a time (non-voters, followers, the active node last), each
# on the binary installed now; a node without an HSM waits for its share
# holders. The token (sudo on sys/appliance/restart) comes from a prompt,
# standard input or --token-file, never the command line.
add_command_under_category "secrets-appliance-rolling-restart", GitlabCtl::SecretsAppliance::CATEGORY, "Restart every secrets appliance node one at a time (after an upgrade); nodes without an HSM wait for shares", 2 do |_cmd_name, *_args|
  Kernel.exit GitlabCtl::SecretsAppliance.new(base_path).run(%w[rolling-restart], ARGV[3..] || [])
end
