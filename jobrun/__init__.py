"""jobrun: run commands as jobs, each a transient systemd service."""

__version__ = "0.1.0"
