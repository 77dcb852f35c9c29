"""Options become typed settings in one place, for the command line and pg_tls_exporter alike."""

from __future__ import annotations

import inspect

from check_pg_tls.options import parser
from check_pg_tls.settings import OPTIONS, settings_from_options

#: Options that choose the targets or the output, never how a target is checked.
NOT_SETTINGS = {
    "targets",
    "host",
    "targets_file",
    "workers",
    "tap",
    "json",
    "quiet",
    "openmetrics",
    "metrics_format",
    "output",
    "verbose",
    "help",
    "version",
}


def test_every_option_is_a_setting_or_chooses_targets_or_output() -> None:
    dests = {action.dest for action in parser()._actions}
    assert set(OPTIONS) == dests - NOT_SETTINGS


def test_the_builder_defaults_are_the_options_defaults() -> None:
    # A module of pg_tls_exporter that sets nothing is checked as a command
    # line that gives nothing.
    defaults = vars(parser().parse_args(["db.example.com"]))
    signature = inspect.signature(settings_from_options)
    for name in OPTIONS:
        default = signature.parameters[name].default
        assert default == defaults[name] or (default == () and defaults[name] == []), name
