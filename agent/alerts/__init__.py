"""Alerts: one incident per (kind, subject) in the store, delivered to webhooks via an outbox.

Every feature (outbound, AMI link, store, recordings, outcomes) reports through
``AlertService``; this package is separate from them because all of them raise alerts.
"""
