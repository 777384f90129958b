"""The operator's API client (on the official kubernetes library), ensure, Events."""
