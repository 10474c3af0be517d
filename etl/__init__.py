"""LAION-5B wide table: rebuild one wide table from LAION's metadata families."""

from etl.engine.hashing import laion_hash

__all__ = ["laion_hash"]
