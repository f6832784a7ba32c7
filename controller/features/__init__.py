"""One folder per capability; `controller.registry` lists them."""
