"""FHIR REST: an HTTP-free request router (``router.py``) and the FastAPI adapter (``http.py``)."""
