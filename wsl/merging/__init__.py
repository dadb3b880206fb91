"""Merging networks in weight space: soups, task arithmetic, TIES, DARE, breadcrumbs, aligned averaging."""
