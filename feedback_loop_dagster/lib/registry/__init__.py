"""The pattern registry: immutable versions, movable labels, policies and lineage edges."""
