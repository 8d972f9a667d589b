"""Allow `python -m moodle_cfn`."""

from moodle_cfn.cli import main

raise SystemExit(main())
