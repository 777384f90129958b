"""Status, computed: pure functions from a spec and observed facts to each kind's status, and the
one merge patch that writes it. No client calls; the handlers observe and write."""
