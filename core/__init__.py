"""Plumbing every process uses: settings, logs, metrics, migrations and the errors a person can fix. It imports only
`db` and `migrations`; the command that composes everything is `mailroom`."""
