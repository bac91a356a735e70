"""The PostgreSQL/pgvector output: bulk-load a run's vectors, index them, swap them in at once.

``--output 'postgresql://USER@HOST:PORT/DB?table=NAME'`` (see :mod:`beam_e5.io.pg.uri`).
``NAME`` is a view that readers query; it always points at one complete, indexed table.

One module per concern; import the one you need (this package imports nothing, so that
reading a URI does not load psycopg or Beam):

* :mod:`~beam_e5.io.pg.uri`: split, check (with libpq's parser) and redact the connection
  string, URI or keyword/value form (pure functions);
* :mod:`~beam_e5.io.pg.config`: :class:`PgSinkConfig`, validated before anything connects;
* :mod:`~beam_e5.io.pg.connection`: psycopg connections with the pgvector types;
* :mod:`~beam_e5.io.pg.copy`: Arrow to SQL column types, ``CREATE TABLE``, binary ``COPY``
  and the Beam write (:class:`WriteToPgvector`);
* :mod:`~beam_e5.io.pg.refusals`: what the table cannot hold (the record rule, a refused
  ``COPY`` halved down to its refused rows);
* :mod:`~beam_e5.io.pg.read`: what is published under a name, and the Beam read of it
  (:class:`ReadPublished`);
* :mod:`~beam_e5.io.pg.run`: :class:`PgRun`, one run's lock, merge, index and swap.

A run, in order (the driver holds one connection and a session advisory lock on ``NAME``
from start to end, so two runs never publish the same name at once):

1. **open** (before the pipeline starts): check the ``vector`` extension (and ``halfvec``
   for ``--vector-dtype float16``), take the lock, drop what crashed runs left
   (``NAME__load_*``, ``NAME__carry_*``, ``NAME__rej_*``, unpublished ``NAME__r*``), create
   this run's unlogged load tables ``NAME__load_RUN`` (vectors), ``NAME__carry_RUN`` (rows
   of ``reembed`` whose vector stays in the database) and ``NAME__rej_RUN`` (keys of
   documents the server refused a row of).
2. **load** (the workers, :class:`~beam_e5.io.pg.copy.WriteToPgvector`): batches of rows go in
   with binary ``COPY ... (FORMAT BINARY)``, one transaction per batch; never a row at a time.
   A bundle that Beam retries may load its rows twice: step 3 keeps one row per id. A batch
   the server refuses for a value is halved down to the refused rows; their documents' keys
   go into ``NAME__rej_RUN``.
3. **merge** (the driver, :meth:`PgRun.publish`): ``NAME__rRUN`` is filled from the load
   table (``DISTINCT ON (id)``, no row of a document in ``NAME__rej_RUN``) and, for
   ``reembed``, from the carry table joined to the published table on ``doc_id`` (every
   row of a carried document, its window rows and document row, copied inside the database
   byte for byte); its row count must equal the run's rows (``written`` documents +
   ``chunk_rows``); primary key on ``id``; ``ANALYZE``; then the ``--index`` (HNSW or
   IVFFlat, cosine) is built.
4. **swap**: ONE transaction replaces the view ``NAME`` by one over the new table and
   records the run (table, model signature, manifest) in ``beam_e5_published``. Readers see
   the old table or the new one, never a part; a run that dies before this commit leaves
   the previous table serving. The table it replaced is kept (``previous_table``) and the
   one before it dropped.

Every statement is built with :mod:`psycopg.sql` (names as ``Identifier``, values as
parameters or ``Literal``). Credentials come from the connection string, ``PGPASSWORD``,
``~/.pgpass`` or any libpq variable; only the redacted string is ever logged or written, and
every driver error reaches the user as a :class:`~beam_e5.io.pg.connection.PgError` scrubbed
of the passwords.
"""
