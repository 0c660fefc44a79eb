"""A protocol module that is slow to import in workers only: it says so on
stdout, then sleeps (test_io_server's Ctrl-C-during-server() test)."""

import time

import pyparallel

if pyparallel.is_parallel_context():
    print("importing in a worker", flush=True)
    time.sleep(2)


class Echo:
    def data_received(self, transport, data):
        return data
