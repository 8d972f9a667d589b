"""Lambda functions the templates embed inline (ZipFile), kept as real files.

CloudFormation once capped inline code at 4,096 characters; it no longer does: the AWS::Lambda::Function
resource schema now says only that the zip CloudFormation makes of it "cannot exceed 4MB" (Code.ZipFile,
https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-lambda-function-code.html;
the removal: aws-cdk PR #20624, "inline function code can exceed 4096 bytes"). The budget here is ours: a
function small enough to review in the template, which keeps its layer far below the 1 MB a template read
from S3 may hold.
"""

from __future__ import annotations

from importlib import resources

ZIPFILE_LIMIT = 32_768


def read(name: str) -> str:
    """The source of a function shipped in this package, checked against the inline-code budget."""
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    if len(text) > ZIPFILE_LIMIT:
        raise ValueError(
            f"{name} is {len(text)} characters; inline functions here hold at most {ZIPFILE_LIMIT}"
        )
    return text
