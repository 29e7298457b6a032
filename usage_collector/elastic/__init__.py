"""Elasticsearch: the objects usage-collector needs, their idempotent setup, and the sink.

* :mod:`.objects`: names, field mappings, template/ILM/role bodies and ``docs/fields.md`` (pure, no client);
* :mod:`.connection`: the client, the compatibility header, and error translation without secrets;
* :mod:`.setup`: :func:`~.setup.setup`, installing the objects idempotently;
* :mod:`.sink`: :class:`~.sink.ElasticsearchSink`.

Imports go one way: ``objects`` <- ``connection`` <- ``setup`` <- ``sink``. Importing this package (or any of
these modules) does not import ``elasticsearch``; that happens only when a client is built or an error
translated.
"""
