"""The audit log: an append-only, hash-chained record of what the operator decided and
observed, kept in an S3-compatible bucket (docs/compliance.md).

records.py is the record format (pure), facts.py derives the facts of a pass (pure), log.py
appends them to the bucket, verify.py checks a chain and the claims made about it, claims.py
gathers those claims from the cluster and MLflow, story.py tells one object's story, and cli.py
is `sovai audit`.
"""
