"""RQ side: job functions, submission, the embedded Valkey, and the CLI."""
