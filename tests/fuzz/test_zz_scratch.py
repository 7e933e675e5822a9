import tests.integration.test_nginx_e2e as e2e
_orig = e2e.render_nginx
def _patched(target, **kw):
    r = _orig(target, **kw)
    t = r.conf.read_text().replace("http {\n", "http {\n    large_client_header_buffers 4 16k;\n", 1)
    r.conf.write_text(t)
    return r
e2e.render_nginx = _patched
from tests.fuzz.test_schemathesis import behind_nginx, test_behind_nginx_as_customer, test_behind_nginx_as_staff  # noqa
