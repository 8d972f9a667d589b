"""moodle-cfn: CloudFormation templates for a highly available Moodle site on AWS."""

__version__ = "0.1.0"
