"""E-mail: the SES SMTP password derivation, the SES resources and DNS records, the relay alternative, the
nodes' mail settings, and a moto deploy of what moto supports (README: E-mail).

moto 5.2's CloudFormation has no AWS::SES::* resources and no AWS::SNS::TopicPolicy (it skips them), nor
Secrets Manager secrets. test_the_mail_resources_moto_supports_deploy deploys the rest (the feedback topic,
the sender user and its key, the five DNS records in a hosted zone) with the DKIM tokens that moto's own SES
gives the domain; the SES resources are checked against the resource schemas cfn-lint ships.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import boto3
import pytest
from cfnlint.api import ManualArgs, lint
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from moodle_cfn.checks import run_checks
from moodle_cfn.errors import InputError
from moodle_cfn.layers import mail
from tests.cfn_eval import active_resources, evaluate_conditions, of_type, resolve_ifs
from tests.rehearsal import deploy, with_placeholders
from tests.test_moodle import BOOTSTRAP_DIR, PHP, needs_php, run_config, settings

DOMAIN = "moodle.example.edu"
ZONE = "Z0123456789ABCDEFGHIJ"
SES = {"DomainName": DOMAIN, "HostedZoneId": ZONE}
RELAY_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:moodle/smtp-relay-Qw34Er"
RELAY = {**SES, "SmtpRelay": "smtp.example.edu:587", "SmtpRelaySecretArn": RELAY_SECRET}
SES_RESOURCES = {"MailIdentity", "MailConfigurationSet", "MailFeedbackDestination", "MailFeedbackTopic",
                 "MailFeedbackTopicPolicy", "MailSender", "MailSenderKey", "MailCredentialsSecret"}  # fmt: skip
RECORDS = {"MailDkimRecord1", "MailDkimRecord2", "MailDkimRecord3", "MailFromMxRecord", "MailFromSpfRecord"}

# AWS's example secret access key (IAM User Guide, "Manage access keys for IAM users"), and the SMTP
# passwords AWS's own reference implementation prints for it: ses_generate_smtp_credentials.py of the AWS
# SDK Code Examples (awsdocs/aws-doc-sdk-examples, python/example_code/ses), which the SES Developer Guide
# ("Obtaining Amazon SES SMTP credentials") links to. AWS publishes the algorithm and that script, no
# input/output pair; these outputs are the script's, run here on this input (not a copy of it in the repo).
AWS_EXAMPLE_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_REFERENCE_PASSWORDS = {
    "us-east-1": "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9",
    "eu-west-1": "BMW5RDrXmmVs0lV7GpI4oLkHXpZ4stDsk6q91z1g38Pk",
}
DERIVE = BOOTSTRAP_DIR / "ses-smtp-password.php"


def derive(region: str, secret_key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PHP, str(DERIVE), region], input=secret_key, capture_output=True, text=True,
                          check=False)  # fmt: skip


@needs_php
@pytest.mark.parametrize("region", sorted(AWS_REFERENCE_PASSWORDS))
def test_the_node_derives_the_smtp_password_aws_reference_derives(region: str) -> None:
    for given in (AWS_EXAMPLE_SECRET_KEY, AWS_EXAMPLE_SECRET_KEY + "\n"):
        result = derive(region, given)
        assert (result.returncode, result.stdout) == (0, AWS_REFERENCE_PASSWORDS[region] + "\n"), (
            result.stderr
        )


@needs_php
def test_the_derivation_takes_the_key_on_stdin_only() -> None:
    refused = subprocess.run([PHP, str(DERIVE), "us-east-1", AWS_EXAMPLE_SECRET_KEY], input="",
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert refused.returncode == 2 and not refused.stdout
    assert derive("us-east-1", "").returncode == 2
    assert derive("not a region", AWS_EXAMPLE_SECRET_KEY).returncode == 2


def site_json(app_template: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    conditions = evaluate_conditions(app_template, given)
    metadata = resolve_ifs(app_template["Resources"]["WebLaunchTemplate"]["Metadata"], conditions)
    return metadata["AWS::CloudFormation::Init"]["config"]["files"]["/etc/moodle-cfn/site.json"]["content"]


def node_secret_arns(resources: dict[str, Any]) -> list[Any]:
    (statement,) = [s for p in resources["WebInstanceRole"]["Properties"]["Policies"]
                    for s in p["PolicyDocument"]["Statement"] if s.get("Sid") == "ReadThisSitesSecrets"]  # fmt: skip
    return statement["Resource"]


def test_a_site_with_a_domain_sends_through_ses_with_dkim_and_its_own_mail_from(app_template):
    resources = active_resources(app_template, SES)
    assert set(resources) >= SES_RESOURCES | RECORDS
    identity = resources["MailIdentity"]["Properties"]
    assert identity["EmailIdentity"] == {"Ref": "DomainName"}
    assert identity["DkimAttributes"] == {"SigningEnabled": True}
    assert identity["DkimSigningAttributes"] == {"NextSigningKeyLength": "RSA_2048_BIT"}
    assert identity["MailFromAttributes"]["MailFromDomain"] == {
        "Fn::Sub": "${SesMailFromSubdomain}.${DomainName}"
    }
    assert identity["ConfigurationSetAttributes"] == {"ConfigurationSetName": {"Ref": "MailConfigurationSet"}}
    dkim = of_type(
        {k: v for k, v in resources.items() if k.startswith("MailDkim")}, "AWS::Route53::RecordSet"
    )
    assert sorted((r["Properties"]["Type"], json.dumps(r["Properties"]["Name"]), json.dumps(r["Properties"]["ResourceRecords"]))
                  for r in dkim.values()) == [
        ("CNAME", json.dumps({"Fn::GetAtt": ["MailIdentity", f"DkimDNSTokenName{n}"]}),
         json.dumps([{"Fn::GetAtt": ["MailIdentity", f"DkimDNSTokenValue{n}"]}])) for n in (1, 2, 3)
    ]  # fmt: skip
    assert all(r["Properties"]["HostedZoneId"] == {"Ref": "HostedZoneId"} for r in dkim.values())
    mx, spf = resources["MailFromMxRecord"]["Properties"], resources["MailFromSpfRecord"]["Properties"]
    assert mx["ResourceRecords"] == [{"Fn::Sub": "10 feedback-smtp.${AWS::Region}.amazonses.com"}]
    assert spf["ResourceRecords"] == ['"v=spf1 include:amazonses.com ~all"']
    assert mx["Name"] == spf["Name"] == identity["MailFromAttributes"]["MailFromDomain"]
    # The SMTP sender is retained with the site's other secrets; only nodes of this site read it.
    assert resources["MailCredentialsSecret"]["DeletionPolicy"] == "RetainExceptOnCreate"
    assert {"Ref": "MailCredentialsSecret"} in node_secret_arns(resources)
    assert site_json(app_template, SES)["MAIL_CREDENTIALS"] == "ses"
    assert site_json(app_template, SES)["MAIL_SMTP_HOST"] == {
        "Fn::Sub": "email-smtp.${AWS::Region}.amazonaws.com:587"
    }


def test_without_a_hosted_zone_ses_is_set_up_and_the_records_are_the_operators(app_template):
    given = {"DomainName": DOMAIN, "CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc"}
    resources = set(active_resources(app_template, given))
    assert resources >= SES_RESOURCES and not RECORDS & resources


def test_bounces_and_complaints_reach_the_topic_only_from_this_accounts_configuration_set(app_template):
    resources = active_resources(app_template, SES)
    destination = resources["MailFeedbackDestination"]["Properties"]["EventDestination"]
    assert (
        set(destination["MatchingEventTypes"]) >= {"bounce", "complaint"} and destination["Enabled"] is True
    )
    assert destination["SnsDestination"] == {"TopicARN": {"Ref": "MailFeedbackTopic"}}
    (statement,) = resources["MailFeedbackTopicPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "ses.amazonaws.com"}
    assert statement["Action"] == ["sns:Publish"]
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert "configuration-set/${Name}" in statement["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"][0]
    # Encrypted with the site's customer key when there is one (SES cannot use the AWS-managed SNS key).
    assert "KmsMasterKeyId" not in resources["MailFeedbackTopic"]["Properties"]
    with_key = active_resources(
        app_template, {**SES, "DataKmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k"}
    )
    assert with_key["MailFeedbackTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "DataKmsKeyArn"}


def test_the_smtp_sender_may_only_send_raw_mail_as_the_sites_domain(app_template):
    user = active_resources(app_template, SES)["MailSender"]
    (policy,) = user["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == ["ses:SendRawEmail"]
    identity, configuration_set = statement["Resource"]
    assert identity["Fn::Sub"].endswith(":identity/${DomainName}")
    assert configuration_set["Fn::Sub"][0].endswith(":configuration-set/${Name}")
    assert statement["Condition"] == {"StringLike": {"ses:FromAddress": {"Fn::Sub": "*@${DomainName}"}}}
    assert "LoginProfile" not in user["Properties"] and "ManagedPolicyArns" not in user["Properties"]


def test_without_a_domain_there_is_no_ses_and_no_mail_settings(app_template):
    resources = active_resources(app_template, {})
    assert not {name for name in resources if name.startswith("Mail")}
    assert site_json(app_template, {})["MAIL_CREDENTIALS"] == "none"
    assert site_json(app_template, {})["MAIL_SMTP_HOST"] == ""


def test_an_smtp_relay_replaces_ses_and_the_nodes_read_only_its_secret(app_template):
    resources = active_resources(app_template, RELAY)
    assert not {name for name in resources if name.startswith("Mail")}
    settings_ = site_json(app_template, RELAY)
    assert (settings_["MAIL_CREDENTIALS"], settings_["MAIL_SMTP_HOST"]) == ("relay", {"Ref": "SmtpRelay"})
    assert settings_["MAIL_SECRET_ARN"] == {"Ref": "SmtpRelaySecretArn"}
    assert settings_["MAIL_ALLOWED_DOMAINS"] == ""
    relay_arn = {"Fn::Sub": ["arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${Name}",
                             {"Name": {"Fn::Select": [6, {"Fn::Split": [":", {"Fn::Sub": "${SmtpRelaySecretArn}:::::::"}]}]}}]}  # fmt: skip
    assert relay_arn in node_secret_arns(resources)
    assert relay_arn not in node_secret_arns(active_resources(app_template, SES))


def test_the_noreply_address_defaults_to_the_domain_and_can_be_set(app_template):
    assert site_json(app_template, SES)["MAIL_NOREPLY_ADDRESS"] == {"Fn::Sub": "noreply@${DomainName}"}
    given = {**SES, "MailNoReplyAddress": "moodle@moodle.example.edu"}
    assert site_json(app_template, given)["MAIL_NOREPLY_ADDRESS"] == {"Ref": "MailNoReplyAddress"}
    assert site_json(app_template, SES)["MAIL_ALLOWED_DOMAINS"] == {"Ref": "DomainName"}


@pytest.mark.parametrize(
    "values, key",
    [
        ({"SmtpRelay": "smtp.example.edu:587"}, "SmtpRelaySecretArn"),
        ({"SmtpRelaySecretArn": RELAY_SECRET}, "SmtpRelaySecretArn"),
        ({"DomainName": DOMAIN, "MailNoReplyAddress": "noreply@other.example.org"}, "MailNoReplyAddress"),
    ],
)
def test_validate_refuses_mail_settings_that_cannot_work(values, key):
    with pytest.raises(InputError) as error:
        run_checks(mail.CHECKS, values, "params.yaml")
    assert error.value.key == key
    # Each is fine in its working form.
    run_checks(mail.CHECKS, {**RELAY, "MailNoReplyAddress": "noreply@other.example.org"}, "params.yaml")


@needs_php
def test_config_php_gives_moodle_the_smtp_settings(tmp_path):
    data = settings("memcached", router=False)
    data["mail"] = {"smtphosts": "email-smtp.eu-west-1.amazonaws.com:587", "user": "AKIAEXAMPLE",
                    "password": "p'w\"$x", "noreplyaddress": "noreply@moodle.example.edu",
                    "allowedemaildomains": "moodle.example.edu"}  # fmt: skip
    cfg = run_config(tmp_path, "4.5", data)
    assert (cfg["smtphosts"], cfg["smtpsecure"], cfg["smtpauthtype"]) == (
        "email-smtp.eu-west-1.amazonaws.com:587",
        "tls",
        "LOGIN",
    )
    assert (cfg["smtpuser"], cfg["smtppass"]) == ("AKIAEXAMPLE", "p'w\"$x")
    assert (cfg["noreplyaddress"], cfg["allowedemaildomains"]) == (
        "noreply@moodle.example.edu",
        "moodle.example.edu",
    )
    data["mail"] = {"noreplyaddress": ""}
    cfg = run_config(tmp_path / "none", "4.5", data)
    assert not {"smtphosts", "smtpuser", "smtppass", "noreplyaddress"} & set(cfg)


def mail_template(app_template: dict[str, Any]) -> dict[str, Any]:
    """The app template's e-mail resources alone, for a site with a domain and a hosted zone."""
    conditions = evaluate_conditions(app_template, SES)
    resources = {name: resolve_ifs(r, conditions) for name, r in app_template["Resources"].items()
                 if name.startswith("Mail") and conditions[r["Condition"]]}  # fmt: skip
    for resource in resources.values():
        del resource["Condition"]
    used = {"DomainName", "HostedZoneId", "SiteName", "SesMailFromSubdomain"}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {name: app_template["Parameters"][name] for name in used},
        "Resources": resources,
    }


def test_the_ses_resources_fit_the_resource_schemas_cfn_lint_ships(app_template):
    template = mail_template(app_template)
    assert not lint(json.dumps(template), config=ManualArgs(regions=["us-east-1", "eu-west-1"]))
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", "AWS::SES::EmailIdentity").schema
    tokens = {f"/properties/DkimDNSToken{kind}{n}" for kind in ("Name", "Value") for n in (1, 2, 3)}
    assert tokens <= set(schema["readOnlyProperties"])


def test_the_mail_resources_moto_supports_deploy(aws, app_template):
    """Topic, user, access key and the five DNS records in a hosted zone, on moto; the DKIM tokens are the
    ones moto's SES gives the domain (moto's SES v2 identity has none, its SES v1 DKIM verification has)."""
    route53 = boto3.client("route53", **aws)
    zone = route53.create_hosted_zone(Name="example.edu", CallerReference="mail-test")["HostedZone"]["Id"]
    tokens = boto3.client("ses", **aws).verify_domain_dkim(Domain=DOMAIN)["DkimTokens"]
    template = mail_template(app_template)
    unsupported = {"MailIdentity", "MailConfigurationSet", "MailFeedbackDestination", "MailFeedbackTopicPolicy",
                   "MailCredentialsSecret"}  # fmt: skip
    for n, token in enumerate(tokens, start=1):
        record = template["Resources"][f"MailDkimRecord{n}"]["Properties"]
        record["Name"], record["ResourceRecords"] = (
            f"{token}._domainkey.{DOMAIN}",
            [f"{token}.dkim.amazonses.com"],
        )
    stack = deploy(aws, "mail", with_placeholders(template, unsupported),
                   {"DomainName": DOMAIN, "HostedZoneId": zone.split("/")[-1]})  # fmt: skip
    records = route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    found = {(r["Type"], r["Name"].rstrip(".")): [v["Value"] for v in r["ResourceRecords"]] for r in records}
    for token in tokens:
        assert found[("CNAME", f"{token}._domainkey.{DOMAIN}")] == [f"{token}.dkim.amazonses.com"]
    assert found[("MX", f"mail.{DOMAIN}")] == ["10 feedback-smtp.us-east-1.amazonses.com"]
    assert found[("TXT", f"mail.{DOMAIN}")] == ['"v=spf1 include:amazonses.com ~all"']
    topics = boto3.client("sns", **aws).list_topics()["Topics"]
    assert stack["physical"]["MailFeedbackTopic"] in {t["TopicArn"] for t in topics}
    iam = boto3.client("iam", **aws)
    user = stack["physical"]["MailSender"]
    (key,) = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    assert key["AccessKeyId"] == stack["physical"]["MailSenderKey"]
    # moto's AWS::IAM::User does not attach inline Policies: the sender's policy is checked on the template
    # (test_the_smtp_sender_may_only_send_raw_mail_as_the_sites_domain) and by parliament (test_iam_lint).
