"""check_pg_tls: does a PostgreSQL server present a TLS certificate clients can trust?"""

__all__ = ["__version__"]

__version__ = "0.1.0"
