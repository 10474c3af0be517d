"""The data-quality report's Jinja2 template and stylesheet: package data, read through importlib.resources
(a package of its own so the wheel and the --py-files zip carry it like code)."""
