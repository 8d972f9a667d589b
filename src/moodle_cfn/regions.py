"""Which AWS Regions exist, from the endpoint data botocore ships (offline: no account, no network)."""

from __future__ import annotations

import difflib
from functools import cache

import botocore.loaders

from moodle_cfn.errors import InputError


@cache
def known_regions() -> frozenset[str]:
    """Every Region of every partition (aws, aws-cn, aws-us-gov, ...) in botocore's endpoints.json."""
    endpoints = botocore.loaders.create_loader().load_data("endpoints")
    return frozenset(region for partition in endpoints["partitions"] for region in partition["regions"])


def check_region(region: str, key: str = "--region") -> str:
    """`region` when it is a real Region code; otherwise one InputError naming the closest real one."""
    if region in known_regions():
        return region
    close = difflib.get_close_matches(region, sorted(known_regions()), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise InputError(region, f"not an AWS Region this version of botocore knows{hint}", key)
