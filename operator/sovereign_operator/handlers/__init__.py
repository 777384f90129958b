"""Kopf handlers (thin: parse -> decide -> ensure -> write status) and their pure decisions."""
