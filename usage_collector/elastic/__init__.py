"""Elasticsearch and Kibana: connection, objects, setup, sink, and the Kibana dashboards."""
