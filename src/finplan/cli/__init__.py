"""Command-line interface: argument handling and printing only; the work lives in the packages."""
