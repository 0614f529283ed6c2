"""Real-time monitor of cement injection during percutaneous vertebroplasty."""

__version__ = "0.1.0"
