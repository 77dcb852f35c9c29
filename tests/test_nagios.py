"""Nagios Core 4 accepts our command and example objects, and runs them.

``nagios4`` from Debian, on a throwaway main config that reads our files and
the few templates of Nagios' sample configuration that our examples use
("linux-server", "generic-service"), defined here minimally. ``-v`` verifies
the objects; then the daemon runs our command against real PostgreSQL
servers and its status file must show what the plugin said.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from testbed.monitoring import CONF, NagiosTree, PluginOutput, installed_plugin
from testbed.pgcluster import Cluster

from .conftest import Pki

COMMANDS_FILE = CONF / "nagios" / "commands.cfg"
SERVICES_FILE = CONF / "nagios" / "services.cfg"

TEMPLATES = """
define timeperiod {
    timeperiod_name     24x7
    alias               always
    sunday              00:00-24:00
    monday              00:00-24:00
    tuesday             00:00-24:00
    wednesday           00:00-24:00
    thursday            00:00-24:00
    friday              00:00-24:00
    saturday            00:00-24:00
}
define command {
    command_name        notify-nobody
    command_line        /bin/true
}
define command {
    command_name        check-host-alive
    command_line        $USER1$/check_ping -H $HOSTADDRESS$ -w 3000.0,80% -c 5000.0,100% -p 5
}
define contact {
    contact_name                    admin
    host_notification_period        24x7
    service_notification_period     24x7
    host_notification_options       n
    service_notification_options    n
    host_notification_commands      notify-nobody
    service_notification_commands   notify-nobody
}
define host {
    name                    linux-server
    register                0
    check_command           check-host-alive
    max_check_attempts      10
    check_period            24x7
    notification_period     24x7
    notification_interval   120
    contacts                admin
}
define service {
    name                    generic-service
    register                0
    max_check_attempts      3
    check_interval          10
    retry_interval          2
    check_period            24x7
    notification_period     24x7
    notification_interval   60
    contacts                admin
}
"""


def test_nagios_verifies_our_objects(tmp_path: Path) -> None:
    templates = tmp_path / "templates.cfg"
    templates.write_text(TEMPLATES)
    done = NagiosTree(tmp_path, [templates, COMMANDS_FILE, SERVICES_FILE]).verify()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"^Total Warnings:\s+0$", output, re.M), output
    assert re.search(r"^Total Errors:\s+0$", output, re.M), output
    # Our objects were read, not just the templates.
    assert re.search(r"Checked\s+2 services\.", output), output
    assert re.search(r"Checked\s+1 hosts\.", output), output
    assert re.search(r"Checked\s+3 commands\.", output), output


def test_example_services_give_the_plugin_valid_options() -> None:
    # Nagios does not look inside $ARG1$; the plugin would, at 3 a.m. Expand
    # the command line as Nagios does and parse it as /bin/sh will.
    command_line = re.search(r"^\s+command_line\s+(.+)$", COMMANDS_FILE.read_text(), re.M)
    assert command_line is not None
    services = re.findall(
        r"^\s+check_command\s+check_pg_tls!(.+)$", SERVICES_FILE.read_text(), re.M
    )
    assert len(services) == 2
    for arg1 in services:
        line = (
            command_line.group(1)
            .replace("$USER1$", "/usr/lib/nagios/plugins")
            .replace("$HOSTADDRESS$", "10.0.0.11")
            .replace("$ARG1$", arg1)
        )
        argv = shlex.split(line)
        assert argv[:3] == ["/usr/lib/nagios/plugins/check_pg_tls", "-H", "10.0.0.11"]
        options = dict(zip(argv[3::2], argv[4::2], strict=True))
        assert options["--servername"] == "db1.example.com"
        assert options["-p"] in ("5432", "6432")
        assert set(options) <= {"-p", "--servername", "--sslrootcert", "-w", "-c"}


def test_nagios_runs_our_command_and_records_the_verdict(
    tmp_path: Path, server: Callable[[str], Cluster], ca: Pki
) -> None:
    # Services written like the examples, pointed at the test servers; the
    # command definition is ours, verbatim.
    scenarios = {"good": "valid", "expiring": "expiring_warn", "nearly-expired": "expiring_crit"}
    states = {"good": 0, "expiring": 1, "nearly-expired": 2}
    options = {
        name: f"-p {server(scenario).port} --servername db.test --sslrootcert {ca.root_file}"
        for name, scenario in scenarios.items()
    }
    objects = tmp_path / "objects.cfg"
    objects.write_text(
        TEMPLATES
        + """
define host {
    use                     linux-server
    host_name               db
    address                 127.0.0.1
}
"""
        + "".join(
            f"""
define service {{
    use                     generic-service
    host_name               db
    service_description     {name}
    check_command           check_pg_tls!{arg1}
    check_interval          1
}}
"""
            for name, arg1 in options.items()
        )
    )
    plugin = installed_plugin()
    tree = NagiosTree(tmp_path / "nagios", [objects, COMMANDS_FILE], str(plugin.parent))
    verified = tree.verify()
    assert verified.returncode == 0, verified.stdout
    try:
        status = tree.start().wait_for_results([f"db!{name}" for name in scenarios])
    finally:
        tree.stop()

    for name, state in states.items():
        service = status[f"db!{name}"]
        assert service["has_been_checked"] == "1", service
        assert service["current_state"] == str(state), service
        argv = [str(plugin), "-H", "127.0.0.1", *shlex.split(options[name])]
        direct = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert direct.returncode == state, direct.stdout
        want = PluginOutput.parse(direct.stdout)
        # Nagios Core turns every ';' of the status text into ':' (the
        # field separator of its log lines); the perfdata is left alone.
        assert service["plugin_output"] == want.text.replace(";", ":"), service
        got = PluginOutput.parse(f"x | {service['performance_data']}")
        assert set(got.perfdata) == {"days_left", "time"}
        assert got.perfdata["days_left"][1:] == want.perfdata["days_left"][1:]
        assert abs(got.value("days_left") - want.value("days_left")) <= 0.011
