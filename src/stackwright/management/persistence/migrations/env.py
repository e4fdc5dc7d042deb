"""Alembic environment: runs against the engine handed in by Database.alembic_config()."""

from alembic import context

from stackwright.management.persistence.models import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # invoked from the alembic CLI
    from stackwright.management.persistence.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
