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

require "#{base_path}/embedded/service/omnibus-ctl/lib/gitlab_ctl"
require "#{base_path}/embedded/service/omnibus-ctl-ee/lib/gitlab_ctl/secrets_appliance"

# gitlab-ctl secrets-appliance <subcommand> [options]: the secrets
# appliance of this node (see GitlabCtl::SecretsAppliance.usage). A missing
# or unknown subcommand prints the usage on stderr and exits 64.
add_command_under_category('secrets-appliance', GitlabCtl::SecretsAppliance::CATEGORY, 'Interact with the secrets appliance (OpenBao): init, unseal, status, rolling-restart, geo, snapshot...', 2) do
  begin
    options = GitlabCtl::SecretsAppliance.parse_options(ARGV)
  rescue OptionParser::ParseError => e
    warn "#{e.message}\n\n#{GitlabCtl::SecretsAppliance.usage}"
    Kernel.exit GitlabCtl::SecretsAppliance::EXIT_USAGE
  end

  if options[:help]
    $stdout.puts GitlabCtl::SecretsAppliance.usage
    Kernel.exit 0
  end

  Kernel.exit GitlabCtl::SecretsAppliance.new(base_path).execute(options)
end
