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

# gitlab-ctl secrets-appliance-snapshot-save FILE [--token-file FILE]
# Streams a Raft snapshot from the active node into FILE (0600, whole or not at all).
add_command_under_category "secrets-appliance-snapshot-save", GitlabCtl::SecretsAppliance::CATEGORY, "Save a Raft snapshot of the secrets appliance (every secret, encrypted) from the active node into FILE", 2 do |_cmd_name, *_args|
  Kernel.exit GitlabCtl::SecretsAppliance.new(base_path).run(%w[snapshot save], ARGV[3..] || [])
end
