"""Test helpers: plain functions and classes the tests import (fixtures live in conftest.py)."""
