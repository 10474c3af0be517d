"""The Java source of the JVM `laion_hash` (etl/engine/jvm_hash.py compiles it); a package so that the wheel ships it."""
