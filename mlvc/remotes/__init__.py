"""Remotes (coming, issue 12): push, fetch, pull and clone against object stores teams
already run (a folder, S3, GCS, Azure, HDFS through pyarrow.fs, or an mlvc server).

Terms: a *remote* holds what a local store holds — packs, their sorted index files, refs —
under one URL; what is missing is learned from its pack indexes and one listing, sent as
new packs, objects first and refs last by compare-and-swap. This layer sits beside the index:
it may use the store and refs below it, and nothing below imports it.
"""
