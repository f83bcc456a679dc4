"""Fixtures: the real binary ($TIDEGATE_BIN) on a free port.

    server                      one server, default configuration
    make_server(**config)       factory: make_server(http_header_timeout="1s") writes
                                "http.header_timeout = 1s" (a leading http_ becomes http.);
                                a dict may be passed as well: make_server({"backlog": 512}).
                                Extra: args=[...], log_to_file=True, nofile=64,
                                listen="127.0.0.1:PORT", backend_listen="" (none),
                                start=False.
Every server is stopped with SIGTERM at teardown; the test then fails unless it
exited 0 and (ASan builds) reported no sanitizer error.
"""

import os
import resource
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

import tidegate  # noqa: E402

# 10,000 concurrent clients need as many descriptors in this process.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))


@pytest.fixture(scope="session")
def binary():
    path = tidegate.binary_path()
    assert os.access(path, os.X_OK), "TIDEGATE_BIN=%s is not executable" % path
    return path


def _finish(servers):
    problems = []
    for srv in servers:
        try:
            srv.close_clients()    # as clients would, so the stop is not held up by them
            code = srv.stop()
            if code != 0:
                problems.append("server pid %s exited with %r on SIGTERM; log:\n%s"
                                % (srv.proc.pid if srv.proc else "?", code, srv.log_text()[-4000:]))
            reports = srv.sanitizer_reports()
            if reports:
                problems.append("sanitizer reports:\n" + "\n".join(reports) + "\n" + srv.log_text()[-8000:])
        finally:
            srv.cleanup()
    assert not problems, "\n\n".join(problems)


@pytest.fixture
def make_server(binary):
    servers = []

    def factory(config=None, *, args=(), log_to_file=False, nofile=None, start=True,
                listen="127.0.0.1:0", backend_listen="127.0.0.1:0", **kw):
        cfg = dict(config or {})
        for k, v in kw.items():
            cfg[tidegate.config_key(k)] = v
        srv = tidegate.Server(binary, cfg, args=args, log_to_file=log_to_file, nofile=nofile,
                              listen=listen, backend_listen=backend_listen)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield factory
    _finish(servers)


@pytest.fixture
def server(make_server):
    return make_server()
