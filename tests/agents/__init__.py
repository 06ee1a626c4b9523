"""Small example agents used by the tests (and to show how little an agent needs)."""
