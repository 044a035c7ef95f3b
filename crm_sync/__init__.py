"""Unified customer store and two-way CRM sync (SQLAlchemy 2): issues 3 and 6. Nothing here yet."""
