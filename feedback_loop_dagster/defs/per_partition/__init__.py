"""What every stage uses to treat each partition of a range run on its own: the per-partition loop
(a SAVEPOINT each), its metadata, plots and checks with one result per partition."""
