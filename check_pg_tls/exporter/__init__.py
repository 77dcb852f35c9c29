"""pg_tls_exporter: the check as a Prometheus multi-target exporter (``/probe``).

Installed with the ``exporter`` extra; the plugin itself never imports this
package or its libraries (prometheus_client, PyYAML, bcrypt).

Layout: :mod:`.probing` is the only module that calls into the check;
:mod:`.config` reads the YAML file, :mod:`.allowlist` decides which targets
may be probed, :mod:`.webconfig` and :mod:`.auth` read exporter-toolkit's
web configuration (TLS, basic auth), :mod:`.pool` bounds the probes running
at once, :mod:`.metrics` holds the exporter's own metrics; the HTTP side is
:mod:`.httpwire` (requests and answers as bytes), :mod:`.connections` (one
thread that accepts, handshakes and reads request heads within their
limits) and :mod:`.server` (authentication, routes, answers); :mod:`.cli`
is the process (flags, logging, signals).
"""
