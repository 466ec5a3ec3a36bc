"""Hotline: the runtime that wires the reporting, triage and partners packages."""

__version__ = "0.1.0"
