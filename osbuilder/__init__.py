"""osbuilder: builds Kata Containers guest assets rootless and reproducibly, and boot-checks them."""

__version__ = "0.1.0"
