"""The people side: who is calling (identity.py), accounts (accounts.py), money (credits.py),
rate limits (rate_limits.py) and the session-signing key (secret_key.py)."""
