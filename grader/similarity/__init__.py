"""Integrity across the class (`dllab similarity OUT`): code similarity by winnowing (code),
identical outputs (outputs), pairs, flags and pages (core)."""
