"""Security: principals, TLS, SASL, ACLs (the transport's and the authorizer's parts)."""
