"""Adapters: a framework's net described in the algorithm's neutral vocabulary
(``magic_init.algorithm.description``). ``caffe``: Caffe nets on either backend."""
