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

# gitlab-ctl secrets-appliance-geo-promote --site NAME [--dry-run] [--wait 5m] [--format json] [--token-file FILE]
# A planned switchover of the secrets appliance's primary site, behind pre-flight checks; every node up.
# The token (sudo on sys/appliance/geo) comes from --token-file, $GITLAB_SECRETS_APPLIANCE_TOKEN,
# standard input or a prompt.
add_command_under_category "secrets-appliance-geo-promote", GitlabCtl::SecretsAppliance::CATEGORY, "Planned switchover: make a Geo site the secrets appliance's primary site (--site NAME; --dry-run checks only)", 2 do |_cmd_name, *_args|
  Kernel.exit GitlabCtl::SecretsAppliance.new(base_path).run(%w[geo promote], ARGV[3..] || [])
end
