"""fslcli: few-shot audio classification with Prototypical Networks."""

__version__ = "0.2.0"
