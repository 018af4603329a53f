"""Command-line tools that are not training: results aggregation and dataset tables.

Kept free of torch and Dassl imports so they run anywhere an output tree can be copied to.
"""
