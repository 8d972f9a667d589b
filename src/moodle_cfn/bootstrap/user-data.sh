#!/bin/bash
# First boot of a Moodle web node (Amazon Linux 2023), embedded in the launch template through Fn::Sub:
# dollar-brace names are filled in by CloudFormation, so shell variables are written without braces.
#
# It installs the CloudFormation helper scripts, has cfn-init write the site's settings and the node
# files (launch template metadata), then hands over to moodle-node-ready.sh, which sets the node up and
# brings it into service through the group's launch lifecycle hook. Until the node files exist, a failure
# is handled here with the AMI's own AWS CLI: the hook is abandoned and CloudFormation told at once.
set -euo pipefail

readonly stack_name="${AWS::StackName}"
readonly region="${AWS::Region}"
readonly signal_resource="${SignalResource}"
readonly init_resource="${InitResource}"
readonly lifecycle_hook="${LifecycleHook}"
readonly log_file=/var/log/moodle-bootstrap.log

exec > >(tee -a "$log_file" | logger -t moodle-bootstrap) 2>&1

imds() {
  local token
  token=$(curl -fsS -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/$1"
}

abandon() {
  echo "FAILED before the node files were written: $1; abandoning this node"
  local instance_id
  instance_id=$(imds instance-id)
  if [[ "$(imds autoscaling/target-lifecycle-state || echo InService)" == InService ]]; then
    aws cloudformation signal-resource --region "$region" --stack-name "$stack_name" \
      --logical-resource-id "$signal_resource" --unique-id "$instance_id" --status FAILURE || true
  fi
  aws autoscaling complete-lifecycle-action --region "$region" --lifecycle-hook-name "$lifecycle_hook" \
    --auto-scaling-group-name "$(imds tags/instance/aws:autoscaling:groupName)" --instance-id "$instance_id" \
    --lifecycle-action-result ABANDON || true
  exit 1
}

dnf install -y --setopt=install_weak_deps=False aws-cfn-bootstrap jq || abandon "cannot install aws-cfn-bootstrap"
/opt/aws/bin/cfn-init -v --stack "$stack_name" --resource "$init_resource" --region "$region" ||
  abandon "cfn-init could not write the node files"
exec /usr/share/moodle-cfn/moodle-node-ready.sh --first-boot

# Never run. Every input a node reads, and a digest of the node files, so that a change to any of them
# changes the launch template's data: a new version, and a rolling replacement of the nodes.
# node files ${NodeFilesDigest}
# node inputs ${NodeInputs}
