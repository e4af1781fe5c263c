require 'json'

# The part of Omnibus' GitlabCtl::Util (files/gitlab-ctl-commands/lib/
# gitlab_ctl/util.rb) that the secrets-appliance commands call: the
# public attributes reconfigure wrote. The file is Omnibus' path unless
# the test harness names another.
module GitlabCtl
  module Util
    PUBLIC_ATTRIBUTES_FILE = '/var/opt/gitlab/public_attributes.json'.freeze

    class << self
      attr_writer :public_attributes_file

      def public_attributes_file
        @public_attributes_file || PUBLIC_ATTRIBUTES_FILE
      end

      def get_public_node_attributes
        return {} unless File.exist?(public_attributes_file)

        JSON.parse(File.read(public_attributes_file))
      end
    end
  end
end
