"""The OpenAPI document describes every response of every route, errors included, with their schema."""

from __future__ import annotations

from service.api.app import create_app
from service.config import Settings
from service.errors import all_specs


def _doc() -> dict:
    return create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()


def test_every_route_documents_its_errors_with_the_error_schema():
    doc = _doc()
    routes = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]
    assert len(routes) >= 9
    for path, method, op in routes:
        codes = {int(c) for c in op["responses"]}
        ok = [c for c in codes if c < 400]
        assert ok, f"{method} {path} has no success response"
        if path not in ("/healthz",):
            errors = [c for c in codes if c >= 400]
            assert errors, f"{method} {path} documents no error"
        for code in codes:
            resp = op["responses"][str(code)]
            assert resp.get("description"), (path, code)
            if code >= 400:
                schema = resp["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code, schema)
            elif "application/json" in resp.get("content", {}):
                assert resp["content"]["application/json"]["schema"], (path, code)
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # 422 is our error body too


def test_error_descriptions_name_the_codes():
    op = _doc()["paths"]["/v1/jobs"]["post"]
    for spec in all_specs():
        if str(spec.http) in op["responses"] and spec.code not in ("internal", "no_workers", "http_error"):
            assert f"`{spec.code}`" in op["responses"][str(spec.http)]["description"], spec.code
