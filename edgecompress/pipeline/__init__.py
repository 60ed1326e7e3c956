"""The pipeline: recipes, the variant grid, runs over devices, caching, selection and reports (composes the layers below)."""
