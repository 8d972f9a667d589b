"""Bundled price tables for `moodle-cfn cost`, one JSON file per region."""
