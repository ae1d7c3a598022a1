"""Stage 6 of the loop: executing decisions (promote, reject, review, roll back) transactionally."""
