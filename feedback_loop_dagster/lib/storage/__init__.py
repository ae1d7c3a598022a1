"""Database access shared by every stage: engines, table definitions and versioned migrations."""
