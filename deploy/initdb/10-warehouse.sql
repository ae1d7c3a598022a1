-- The warehouse (and, here, the source table) live in their own database, apart from Dagster's.
CREATE DATABASE feedback OWNER dagster;
