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
#
# gitlab-ctl secrets-appliance-geo-promote --site NAME --force --fenced-site OLD [--format json]
# Disaster promotion when the primary site is gone: on every node of site NAME, with
# `gitlab-ctl stop secrets-appliance` first and `gitlab-ctl start secrets-appliance` after.
# It works on this node's data dir (the config reconfigure rendered), needs no token.
add_command_under_category "secrets-appliance-geo-promote", GitlabCtl::SecretsAppliance::CATEGORY, "Make a Geo site the secrets appliance's primary site: planned switchover (--site NAME; --dry-run checks only), or disaster promotion on a stopped node (--force --fenced-site OLD)", 2 do |_cmd_name, *_args|
  args = ARGV[3..] || []
  ctl = GitlabCtl::SecretsAppliance.new(base_path)
  Kernel.exit(args.include?('--force') ? ctl.run_offline(%w[geo promote], args) : ctl.run(%w[geo promote], args))
end
