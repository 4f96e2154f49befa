"""Notifications to people and chat tools: email over SMTP and Slack-style JSON webhooks, with
per-tenant templates, suppression and preferences (``config``), rendered without personal data
unless a template says it may carry some (``templates``)."""
