"""The primer query for the tasks: it lives in adapters.mysql.primer_query, where the reference
primer server (reference_server/) imports it without loading the Celery app."""

from adapters.mysql.primer_query import GLOBAL_REALM, fetch_rows, fresh_response, primer_sql

__all__ = ["GLOBAL_REALM", "fetch_rows", "fresh_response", "primer_sql"]
