"""Small client helpers over the sync kubernetes client: generic CRUD, ensure, lookups."""
