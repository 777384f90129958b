"""Kopf handlers, thin: observe (indexes) -> pure compute (status/, validation/) -> apply the
children -> one status write -> the shared follow-up sweep."""
