"""The product catalog: public reads (cached, searchable, keyset-paginated), staff writes."""
