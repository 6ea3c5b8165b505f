"""Evaluation the way LIMA and its successors did it: judges, protocols and reports."""
