"""presencex: a SIP presence server on trio."""

__version__ = "0.1.0"
