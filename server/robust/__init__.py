"""Robustness: attacks, tamper checks, purification and robust training (Lipschitz penalty).

Importing this package loads nothing heavy; import the submodules you need.
"""
