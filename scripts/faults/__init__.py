"""The cases of scripts/fault_catalogue.py, by layer (importing a module registers its cases)."""
