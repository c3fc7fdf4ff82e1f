"""Trustline: keeps a healthcare call centre's phone numbers trusted, next to an Asterisk PBX."""

__version__ = "0.1.0"
