"""`make demo`: the whole product on one machine, on embedded defaults."""

from .flow import run_demo

__all__ = ["run_demo"]
