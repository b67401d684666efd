"""The largest values the gateway's columns hold (light: no SQLModel, for config and CLI)."""

BIGINT_MAX = 2**63 - 1  # the largest id, session id or task id either backend can store
INT_MAX = 2**31 - 1  # the largest rpm_limit or token count (INTEGER columns on PostgreSQL)
KEY_NAME_MAX = 200  # characters in an API key's name (who or what it is for)
