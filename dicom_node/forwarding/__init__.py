"""Forwarding (issue 17, IHE AI Results): the tenant's rules C-STORE images, AI results and clinician decisions
to configured PACS, driven from the outbox with retries, each delivery's state kept and served over HTTP."""
