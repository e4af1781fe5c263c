# Stands for omnibus-gitlab's files/gitlab-ctl-commands/lib/gitlab_ctl.rb
# (installed as /opt/gitlab/embedded/service/omnibus-ctl/lib/gitlab_ctl),
# which loads GitlabCtl's helpers: here only GitlabCtl::Util.
require_relative 'gitlab_ctl/util'
