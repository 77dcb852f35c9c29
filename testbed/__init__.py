"""Real servers and a test PKI for check_pg_tls's tests, demo and benchmark.

Not installed with the plugin: this package lives beside it in the source
tree and is used by ``tests/``, ``bench/`` and the demo.
"""
