"""Outbound e-mail: Amazon SES for the site's domain, or the operator's own SMTP relay.

With a DomainName and no SmtpRelay, the app stack makes the domain an SES identity (Easy DKIM, 2048-bit keys,
a custom MAIL FROM subdomain), publishes its DNS records in the site's Route 53 zone when HostedZoneId is
given, sends bounces and complaints to an SNS topic through a configuration set, and creates an IAM user
allowed only ses:SendRawEmail as the site's domain. SES's SMTP interface authenticates only with an IAM
user's access key: "To send email using the SES SMTP interface, you need SMTP credentials ... derived from
an IAM user's secret access key" (SES Developer Guide, "Obtaining Amazon SES SMTP credentials",
https://docs.aws.amazon.com/ses/latest/dg/smtp-credentials.html), so a role (the nodes' own) cannot serve.
The key is kept in a Secrets Manager secret; each node derives the SMTP password from it
(bootstrap/ses-smtp-password.php) and gives Moodle smtphosts, smtpuser and smtppass through moodle.json.

Without a domain the site has no address SES could verify: no identity, no mail settings (README: E-mail).
SmtpRelay (host:port) with SmtpRelaySecretArn ({"username", "password"}) replaces SES altogether.
"""

from __future__ import annotations

from collections.abc import Mapping

from awacs import ses, sns
from awacs.aws import (
    Allow,
    ArnLike,
    Condition,
    PolicyDocument,
    Principal,
    Statement,
    StringEquals,
    StringLike,
)
from troposphere import (
    And,
    Equals,
    GetAtt,
    If,
    Not,
    NoValue,
    Or,
    Output,
    Parameter,
    Ref,
    Select,
    Split,
    Sub,
    Template,
)
from troposphere.iam import AccessKey, Policy, User
from troposphere.route53 import RecordSetType
from troposphere.secretsmanager import Secret
from troposphere.ses import (
    ConfigurationSet,
    ConfigurationSetAttributes,
    ConfigurationSetEventDestination,
    DeliveryOptions,
    DkimAttributes,
    DkimSigningAttributes,
    EmailIdentity,
    EventDestination,
    FeedbackAttributes,
    MailFromAttributes,
    ReputationOptions,
    SendingOptions,
    SnsDestination,
    SuppressionOptions,
)
from troposphere.sns import Topic, TopicPolicy

from moodle_cfn.checks import CrossCheck, FindingCheck
from moodle_cfn.common import RETAIN_EXCEPT_ON_CREATE, SITE_NAME, OperatorParameter, checkov_skips, tags
from moodle_cfn.encryption import CUSTOMER_KEY_SKIP_REASON, customer_key
from moodle_cfn.layers import site
from moodle_cfn.layers.moodle import EMAIL_PATTERN
from moodle_cfn.policies import POLICY_VERSION

GROUP_MAIL = "E-mail"
HAS_SMTP_RELAY = "HasSmtpRelay"
SEND_THROUGH_SES = "SendThroughSes"
SES_RECORDS_IN_ZONE = "SesRecordsInHostedZone"
HAS_NOREPLY_ADDRESS = "HasMailNoReplyAddress"
SMTP_PORT = 587
DKIM_RECORDS = 3
# What the topic hears: mail that bounced, was marked as spam, or that SES refused to send.
FEEDBACK_EVENTS = ("bounce", "complaint", "reject")
CREDENTIALS_OUTPUT = "MailCredentialsSecretArn"
FEEDBACK_TOPIC_OUTPUT = "MailFeedbackTopicArn"

SMTP_RELAY = OperatorParameter(
    Parameter(
        "SmtpRelay",
        Type="String",
        Default="",
        AllowedPattern=r"^((([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}):[0-9]{1,5})?$",
        ConstraintDescription="Empty, or host:port such as smtp.example.edu:587.",
        Description="Your own SMTP relay (STARTTLS, AUTH LOGIN) instead of Amazon SES, as host:port. Empty: "
        "Amazon SES for DomainName (no DomainName: the site sends no mail).",
    ),
    label="Your SMTP relay (optional)",
    group=GROUP_MAIL,
)
SMTP_RELAY_SECRET_ARN = OperatorParameter(
    Parameter(
        "SmtpRelaySecretArn",
        Type="String",
        Default="",
        AllowedPattern=r"^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+)?$",
        ConstraintDescription="Empty, or the ARN of a Secrets Manager secret.",
        Description='With SmtpRelay: a Secrets Manager secret holding {"username", "password"} for the '
        "relay (under the AWS-managed key or DataKmsKeyArn). The web nodes may read it and no other.",
    ),
    label="SMTP relay credentials secret ARN",
    group=GROUP_MAIL,
)
NOREPLY_ADDRESS = OperatorParameter(
    Parameter(
        "MailNoReplyAddress",
        Type="String",
        Default="",
        AllowedPattern=rf"^({EMAIL_PATTERN.strip('^$')})?$",
        ConstraintDescription="Empty, or an e-mail address such as noreply@example.edu.",
        Description="The From address of Moodle's mail (noreplyaddress). Empty: noreply@DomainName. With SES "
        "it must be at DomainName, the only identity the stack verifies.",
    ),
    label="No-reply address",
    group=GROUP_MAIL,
)
MAIL_FROM_SUBDOMAIN = OperatorParameter(
    Parameter(
        "SesMailFromSubdomain",
        Type="String",
        Default="mail",
        AllowedPattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
        ConstraintDescription="One DNS label, such as mail or bounce.",
        Description="SES's custom MAIL FROM domain is this label under DomainName (its MX and SPF records go "
        "into the hosted zone), so SPF aligns with the From domain for DMARC.",
    ),
    label="SES MAIL FROM subdomain",
    group=GROUP_MAIL,
)
PARAMETERS = (SMTP_RELAY, SMTP_RELAY_SECRET_ARN, NOREPLY_ADDRESS, MAIL_FROM_SUBDOMAIN)


def add_conditions(template: Template) -> None:
    """SES when the site has a domain and no relay is given; its records when the zone is the stack's."""
    template.add_condition(HAS_SMTP_RELAY, Not(Equals(Ref(SMTP_RELAY.parameter), "")))
    template.add_condition(
        SEND_THROUGH_SES,
        And(Not(Equals(Ref(site.DOMAIN_NAME.parameter), "")), Equals(Ref(SMTP_RELAY.parameter), "")),
    )
    template.add_condition(
        SES_RECORDS_IN_ZONE,
        And(
            Not(Equals(Ref(site.DOMAIN_NAME.parameter), "")),
            Equals(Ref(SMTP_RELAY.parameter), ""),
            Not(Equals(Ref(site.HOSTED_ZONE_ID.parameter), "")),
        ),
    )
    template.add_condition(HAS_NOREPLY_ADDRESS, Not(Equals(Ref(NOREPLY_ADDRESS.parameter), "")))


def configuration_set_arn(configuration_set: ConfigurationSet) -> Sub:
    """The configuration set's ARN (Ref gives its name)."""
    return Sub(
        "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:configuration-set/${Name}",
        Name=Ref(configuration_set),
    )


def identity_arn() -> Sub:
    """The domain identity's ARN."""
    return Sub(
        f"arn:${{AWS::Partition}}:ses:${{AWS::Region}}:${{AWS::AccountId}}:identity/${{{site.DOMAIN_NAME.name}}}"
    )


def add_feedback(template: Template) -> tuple[ConfigurationSet, Topic]:
    """The configuration set every message of the identity goes through, and the topic its bounces,
    complaints and rejections are published to. SES publishes only with the topic's permission, given to
    ses.amazonaws.com for this account's configuration set alone (confused deputy)."""
    topic = template.add_resource(
        Topic(
            "MailFeedbackTopic",
            Condition=SEND_THROUGH_SES,
            DisplayName=Sub(f"${{{SITE_NAME.name}}} mail bounces and complaints"),
            # SES, like CloudWatch alarms, cannot use the AWS-managed SNS key (its key policy admits no
            # service principal): a customer key whose policy allows ses.amazonaws.com, or none.
            KmsMasterKeyId=customer_key(),
            Tags=tags("mail-feedback"),
            Metadata=checkov_skips(
                CKV_AWS_26="SES cannot publish to a topic encrypted with the AWS-managed SNS key; with "
                "DataKmsKeyArn the topic uses that customer key (its policy must allow ses.amazonaws.com)."
            ),
        )
    )
    configuration_set = template.add_resource(
        ConfigurationSet(
            "MailConfigurationSet",
            Condition=SEND_THROUGH_SES,
            # TLS to the receiving server or no delivery; bounced and complaining addresses are suppressed
            # at account level rather than tried again.
            DeliveryOptions=DeliveryOptions(TlsPolicy="REQUIRE"),
            ReputationOptions=ReputationOptions(ReputationMetricsEnabled=True),
            SendingOptions=SendingOptions(SendingEnabled=True),
            SuppressionOptions=SuppressionOptions(SuppressedReasons=["BOUNCE", "COMPLAINT"]),
        )
    )
    policy = template.add_resource(
        TopicPolicy(
            "MailFeedbackTopicPolicy",
            Condition=SEND_THROUGH_SES,
            Topics=[Ref(topic)],
            PolicyDocument=PolicyDocument(
                Version=POLICY_VERSION,
                Statement=[
                    Statement(
                        Sid="SesPublishesThisSitesFeedback",
                        Effect=Allow,
                        Principal=Principal("Service", "ses.amazonaws.com"),
                        Action=[sns.Publish],
                        Resource=[Ref(topic)],
                        Condition=Condition(
                            [
                                StringEquals({"aws:SourceAccount": Ref("AWS::AccountId")}),
                                ArnLike({"aws:SourceArn": configuration_set_arn(configuration_set)}),
                            ]
                        ),
                    )
                ],
            ),
        )
    )
    template.add_resource(
        ConfigurationSetEventDestination(
            "MailFeedbackDestination",
            Condition=SEND_THROUGH_SES,
            DependsOn=[policy.title],
            ConfigurationSetName=Ref(configuration_set),
            EventDestination=EventDestination(
                Name="bounces-and-complaints",
                Enabled=True,
                MatchingEventTypes=list(FEEDBACK_EVENTS),
                SnsDestination=SnsDestination(TopicARN=Ref(topic)),
            ),
        )
    )
    return configuration_set, topic


def mail_from_domain() -> Sub:
    return Sub(f"${{{MAIL_FROM_SUBDOMAIN.name}}}.${{{site.DOMAIN_NAME.name}}}")


def add_identity(template: Template, configuration_set: ConfigurationSet) -> EmailIdentity:
    """The domain identity: Easy DKIM with 2048-bit keys SES rotates itself, a MAIL FROM subdomain so SPF
    aligns with the From domain, and the configuration set applied to every message sent as it. Feedback
    is not e-mailed: the configuration set's event destination is the tracking method SES requires."""
    return template.add_resource(
        EmailIdentity(
            "MailIdentity",
            Condition=SEND_THROUGH_SES,
            DependsOn=["MailFeedbackDestination"],
            EmailIdentity=Ref(site.DOMAIN_NAME.parameter),
            DkimAttributes=DkimAttributes(SigningEnabled=True),
            DkimSigningAttributes=DkimSigningAttributes(NextSigningKeyLength="RSA_2048_BIT"),
            MailFromAttributes=MailFromAttributes(
                MailFromDomain=mail_from_domain(), BehaviorOnMxFailure="USE_DEFAULT_VALUE"
            ),
            ConfigurationSetAttributes=ConfigurationSetAttributes(
                ConfigurationSetName=Ref(configuration_set)
            ),
            FeedbackAttributes=FeedbackAttributes(EmailForwardingEnabled=False),
        )
    )


def feedback_mx() -> Sub:
    """The MAIL FROM domain's MX: SES's feedback endpoint of this Region (SES Developer Guide, "Using a
    custom MAIL FROM domain")."""
    return Sub("10 feedback-smtp.${AWS::Region}.amazonses.com")


SPF_RECORD = '"v=spf1 include:amazonses.com ~all"'


def add_dns_records(template: Template, identity: EmailIdentity) -> None:
    """The three DKIM CNAMEs and the MAIL FROM domain's MX and SPF records, in the site's zone."""
    zone = Ref(site.HOSTED_ZONE_ID.parameter)
    for n in range(1, DKIM_RECORDS + 1):
        template.add_resource(
            RecordSetType(
                f"MailDkimRecord{n}",
                Condition=SES_RECORDS_IN_ZONE,
                HostedZoneId=zone,
                Name=GetAtt(identity, f"DkimDNSTokenName{n}"),
                Type="CNAME",
                TTL="1800",
                ResourceRecords=[GetAtt(identity, f"DkimDNSTokenValue{n}")],
            )
        )
    for title, record_type, value in (
        ("MailFromMxRecord", "MX", feedback_mx()),
        ("MailFromSpfRecord", "TXT", SPF_RECORD),
    ):
        template.add_resource(
            RecordSetType(
                title,
                Condition=SES_RECORDS_IN_ZONE,
                HostedZoneId=zone,
                Name=mail_from_domain(),
                Type=record_type,
                TTL="1800",
                ResourceRecords=[value],
            )
        )


def sender_policy(configuration_set: ConfigurationSet) -> PolicyDocument:
    """ses:SendRawEmail (what an SMTP send is authorized as) as the site's domain and through its
    configuration set, From an address at the domain; nothing else."""
    return PolicyDocument(
        Version=POLICY_VERSION,
        Statement=[
            Statement(
                Sid="SendAsThisSitesDomainOnly",
                Effect=Allow,
                Action=[ses.SendRawEmail],
                Resource=[identity_arn(), configuration_set_arn(configuration_set)],
                Condition=Condition(StringLike({"ses:FromAddress": Sub(f"*@${{{site.DOMAIN_NAME.name}}}")})),
            )
        ],
    )


def add_smtp_credentials(template: Template, configuration_set: ConfigurationSet) -> Secret:
    """The IAM user SES's SMTP interface authenticates, its access key, and the secret keeping the key."""
    user = template.add_resource(
        User(
            "MailSender",
            Condition=SEND_THROUGH_SES,
            Path="/moodle-cfn/",
            Policies=[Policy(PolicyName="send-site-mail", PolicyDocument=sender_policy(configuration_set))],
            Tags=tags("mail-sender"),
        )
    )
    key = template.add_resource(
        AccessKey("MailSenderKey", Condition=SEND_THROUGH_SES, UserName=Ref(user), Status="Active")
    )
    # As the AWS::IAM::AccessKey reference's own example keeps a key: its SecretAccessKey written into a
    # secret by CloudFormation, never an output or a parameter.
    return template.add_resource(
        Secret(
            "MailCredentialsSecret",
            Condition=SEND_THROUGH_SES,
            Description=Sub(
                f"SES SMTP sender of ${{{SITE_NAME.name}}}: IAM access key (nodes derive the password)"
            ),
            SecretString=Sub(
                '{"username": "${Key}", "secret_access_key": "${Secret}"}',
                Key=Ref(key),
                Secret=GetAtt(key, "SecretAccessKey"),
            ),
            KmsKeyId=customer_key(),
            Tags=tags("mail-sender"),
            Metadata=checkov_skips(
                CKV_AWS_149=CUSTOMER_KEY_SKIP_REASON,
            ),
            **RETAIN_EXCEPT_ON_CREATE,
        )
    )


def add_resources(template: Template) -> Secret:
    """Everything SES needs; the secret the nodes read."""
    configuration_set, topic = add_feedback(template)
    identity = add_identity(template, configuration_set)
    add_dns_records(template, identity)
    secret = add_smtp_credentials(template, configuration_set)
    template.add_output(
        Output(
            FEEDBACK_TOPIC_OUTPUT,
            Condition=SEND_THROUGH_SES,
            Description="SNS topic of SES bounces, complaints and rejections (subscribe to it)",
            Value=Ref(topic),
        )
    )
    template.add_output(
        Output(
            CREDENTIALS_OUTPUT,
            Condition=SEND_THROUGH_SES,
            Description="Secret with the SES SMTP sender's access key",
            Value=Ref(secret),
        )
    )
    return secret


def secret_arns(credentials: Secret) -> list[If]:
    """The mail secret the nodes read: the stack's SES key or the operator's relay login."""
    return [
        If(SEND_THROUGH_SES, Ref(credentials), NoValue),
        If(HAS_SMTP_RELAY, relay_secret_arn(), NoValue),
    ]


def relay_secret_arn() -> Sub:
    """The relay's secret for the nodes' policy, named in this account and Region (where the nodes read
    it): rebuilt from the ARN's last field, so a wrong account or Region in the parameter reads nothing."""
    return Sub(
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${Name}",
        # Padded with colons: an empty parameter (no relay) still has a 7th field, whichever branch of the
        # Fn::If around this CloudFormation evaluates.
        Name=Select(6, Split(":", Sub(f"${{{SMTP_RELAY_SECRET_ARN.name}}}:::::::"))),
    )


def node_settings(credentials: Secret) -> dict[str, object]:
    """The site.json keys moodle-node-setup.sh turns into Moodle's mail settings."""
    domain = Ref(site.DOMAIN_NAME.parameter)
    return {
        # ses: the secret holds an IAM key to derive the SMTP password from; relay: username + password.
        "MAIL_CREDENTIALS": If(HAS_SMTP_RELAY, "relay", If(SEND_THROUGH_SES, "ses", "none")),
        "MAIL_SMTP_HOST": If(
            HAS_SMTP_RELAY,
            Ref(SMTP_RELAY.parameter),
            If(SEND_THROUGH_SES, Sub(f"email-smtp.${{AWS::Region}}.amazonaws.com:{SMTP_PORT}"), ""),
        ),
        "MAIL_SECRET_ARN": If(
            HAS_SMTP_RELAY,
            Ref(SMTP_RELAY_SECRET_ARN.parameter),
            If(SEND_THROUGH_SES, Ref(credentials), ""),
        ),
        "MAIL_NOREPLY_ADDRESS": If(
            HAS_NOREPLY_ADDRESS,
            Ref(NOREPLY_ADDRESS.parameter),
            If(site.HAS_DOMAIN, Sub(f"noreply@${{{site.DOMAIN_NAME.name}}}"), ""),
        ),
        # Moodle sends as the user's own address only from these domains (else as noreply): with SES only
        # the verified domain may be a From.
        "MAIL_ALLOWED_DOMAINS": If(SEND_THROUGH_SES, domain, ""),
    }


def noreply_problem(values: Mapping[str, str]) -> tuple[str, str] | None:
    """With SES, Moodle's From must be at the domain the stack verifies (SES refuses any other)."""
    address, domain = values.get(NOREPLY_ADDRESS.name, ""), values.get(site.DOMAIN_NAME.name, "")
    if address and domain and not values.get(SMTP_RELAY.name) and address.rpartition("@")[2] != domain:
        return NOREPLY_ADDRESS.name, (
            f"must be an address at {domain}: Amazon SES sends only as the identity the stack verifies "
            "(or set SmtpRelay)"
        )
    return None


CHECKS = (
    CrossCheck(
        SMTP_RELAY_SECRET_ARN.name,
        "is required with SmtpRelay (a secret holding the relay's username and password)",
        lambda v: not v.get(SMTP_RELAY.name) or bool(v.get(SMTP_RELAY_SECRET_ARN.name)),
    ),
    CrossCheck(
        SMTP_RELAY_SECRET_ARN.name,
        "applies only with SmtpRelay (without it the site sends through Amazon SES with its own key)",
        lambda v: bool(v.get(SMTP_RELAY.name)) or not v.get(SMTP_RELAY_SECRET_ARN.name),
    ),
    FindingCheck(noreply_problem),
)


def master_rules() -> dict[str, dict[str, object]]:
    """A relay and its login come together."""
    relay_empty = Equals(Ref(SMTP_RELAY.parameter), "")
    secret_empty = Equals(Ref(SMTP_RELAY_SECRET_ARN.parameter), "")
    return {
        "SmtpRelayNeedsItsSecret": {
            "Assertions": [
                {
                    "Assert": Or(And(relay_empty, secret_empty), And(Not(relay_empty), Not(secret_empty))),
                    "AssertDescription": "SmtpRelay and SmtpRelaySecretArn go together: the relay's host:port "
                    "and the secret with its username and password.",
                }
            ],
        }
    }
