"""Sending one email over SMTP (RFC 5321) with stdlib ``smtplib`` in a worker thread.

TLS: ``none``, ``starttls`` (RFC 3207) or ``implicit`` (SMTPS, RFC 8314), verifying the server's
certificate against the system store or ``ca_file``."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid

from fhir_server.notify.config import SmtpSettings


def build_message(smtp: SmtpSettings, recipient: str, subject: str, body: str, key: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(idstring=key.replace("|", "."), domain="dermbridge")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to notifications
    message.set_content(body)
    return message


async def send_email(smtp: SmtpSettings, message: EmailMessage) -> None:
    await asyncio.to_thread(_send, smtp, message)


def _send(smtp: SmtpSettings, message: EmailMessage) -> None:
    context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
    client: smtplib.SMTP
    if smtp.tls == "implicit":
        client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=context)
    else:
        client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
    with client:
        if smtp.tls == "starttls":
            client.starttls(context=context)
        if smtp.username:
            client.login(smtp.username, smtp.password or "")
        client.send_message(message)
