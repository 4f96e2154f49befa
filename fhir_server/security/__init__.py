"""Authentication and authorisation: OAuth2 tokens, SMART scopes, clients and their roles."""
