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
account_helper = AccountHelper.new(node)
omnibus_helper = OmnibusHelper.new(node)
helper = SecretsApplianceHelper.new(node)
settings = node['gitlab_secrets_appliance']
service = SecretsApplianceHelper::SERVICE
logging_settings = helper.logging_settings

service_user = account_helper.secrets_appliance_user
service_group = account_helper.secrets_appliance_group
working_dir = settings['dir']
config_file = helper.config_file

account 'GitLab secrets appliance user and group' do
  username service_user
  uid settings['uid']
  ugid service_group
  groupname service_group
  gid settings['gid']
  shell settings['shell']
  home working_dir
  manage node['gitlab']['manage_accounts']['enable']
end

# appliance.json lives here, readable by the service's group only.
directory working_dir do
  owner 'root'
  group service_group
  mode '0750'
  recursive true
end

# The appliance refuses a data_dir its group may write or others may enter:
# Raft's files hold the encrypted barrier.
directory settings['data_dir'] do
  owner service_user
  group service_group
  mode '0700'
  recursive true
end

# Scheduled snapshots hold every secret (encrypted): the service user's only.
unless helper.snapshot_directory.nil?
  directory helper.snapshot_directory do
    owner service_user
    group service_group
    mode '0700'
    recursive true
  end
end

# svlogd writes current here; the appliance writes its file audit log.
directory logging_settings[:log_directory] do
  owner logging_settings[:log_directory_owner]
  mode logging_settings[:log_directory_mode]
  if log_group = logging_settings[:log_directory_group]
    group log_group
  end
  recursive true
end

# A changed environment or binary restarts the service, if it runs: a
# restart starts a service the operator stopped (and seals a node that
# has no HSM).
env_dir settings['env_directory'] do
  variables settings['env']
  notifies :restart, "runit_service[#{service}]" if omnibus_helper.should_notify?(service)
end

# The TLS key and the HSM PIN file are the operator's: the service user
# must read them, and the appliance refuses them if others can (0640 at
# most). A missing one is reported by the validation of appliance.json.
helper.private_files.each do |path|
  file path do
    owner 'root'
    group service_group
    mode '0640'
    sensitive true
    only_if { ::File.exist?(path) }
  end
end

# Geo: the sites, as the appliance's topology file. The same bytes on every
# node (gitlab.rb's order, fixed keys). It replaces the file the running
# node follows (re-read when it changes, no restart) only once the
# appliance accepted it with this node's config.
topology_file = helper.geo_topology_file
cluster_copy = ::File.join(working_dir, SecretsApplianceHelper::GEO_CLUSTER_COPY)
if helper.geo?
  file topology_file do
    owner 'root'
    group service_group
    mode '0644'
    content helper.geo_topology_json
    verify { |path| helper.validate_topology(path) }
  end
else
  file topology_file do
    action :delete
  end
end

# The Geo role of Omnibus' gitlab-cluster.json, which the service user
# cannot read (root, 0600), mirrored where it can unless geo['cluster_file']
# names another file; `gitlab-ctl geo promote` records the role there, then
# runs reconfigure.
if helper.geo? && helper.geo_cluster_copy?
  ruby_block 'Mirror the Geo role of gitlab-cluster.json for the secrets appliance' do
    block { helper.sync_geo_cluster_file }
  end
else
  file cluster_copy do
    action :delete
  end
end

# Checked by the appliance itself before it replaces the running config.
# A change is applied with SIGHUP (what needs a restart is logged): a
# restart would seal a node that has no HSM.
template config_file do
  source 'appliance.json.erb'
  owner 'root'
  group service_group
  mode '0640'
  variables(config: helper.config)
  verify { |path| helper.validate(path) }
  notifies :hup, "runit_service[#{service}]"
end

runit_service service do
  options(helper.runit_options)
  log_options logging_settings[:options]
end

# A new binary (an upgrade) does not restart the service: every node
# without an HSM would come back sealed, all at once. The operator moves
# the nodes onto it one at a time with `gitlab-ctl secrets-appliance
# rolling-restart`; reconfigure says so.
version_path = ::File.join(working_dir, 'VERSION')
if helper.binary_changed?(version_path) && omnibus_helper.should_notify?(service)
  LoggingHelper.warning("The secrets appliance binary changed and the running node still runs the previous one. " \
                        "It was not restarted: a restart seals a node without an HSM. When every node is upgraded, run " \
                        "`gitlab-ctl secrets-appliance rolling-restart` on one of them: it restarts the nodes one at a time.")
end

version_file 'Create version file for the secrets appliance' do
  version_file_path version_path
  version_check_cmd "#{helper.binary} version"
end
