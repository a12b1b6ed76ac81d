#!/usr/bin/env python3
"""make_schemas.py: writes schemas.jsonl, the schema set of `mfaserve bench
mask` (issue 14 item 3: MaskBench-style token-mask timing).

Each output line: {"name": str, "strict": bool, "schema": <JSON Schema>,
"instances": [str, ...]}. An instance is the exact text the grammar writes
for a valid value: compact JSON as JSON.stringify writes it (no whitespace,
only the required escapes, raw UTF-8), object members in the schema's
`properties` order. The Python values below are written in that order;
json.dumps(separators=(",", ":"), ensure_ascii=False) then writes the same
bytes as JSON.stringify for these values (no floats with an exponent or
without a fraction). `strict`: compile with GR_SCHEMA_STRICT_OBJECTS (an
absent additionalProperties means false, OpenAI's strict mode).

Checks (run after editing): every instance validates with ajv (draft
2020-12 + ajv-formats) when AJV_DIR names a folder with those npm packages,
and `mfaserve bench mask` reports every token allowed by its mask.

    /usr/bin/python3 tools/bench/mask/make_schemas.py [out] """
import json
import os
import subprocess
import sys

S = []


def add(name, schema, instances, strict=False):
    S.append({"name": name, "strict": strict, "schema": schema, "instances": instances})


def obj(props, required=None, extra=False):
    o = {"type": "object", "properties": props, "required": list(props) if required is None else required}
    if not extra:
        o["additionalProperties"] = False
    return o


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}

LOREM = ("Structured outputs let an application parse every reply. This paragraph is long on purpose: "
         "free-text fields are where most of a JSON document's tokens go, and a mask there allows almost "
         "the whole vocabulary, so it is the slowest kind of step for a trie walk. It has \"quotes\", a "
         "backslash \\ and a tab\tas well as a newline\nand some non-ASCII text: café, naïve, 東京, emoji 🙂.")

# 1. user profile: formats, lengths, bounds, nullable
add("user_profile", obj({
    "id": {"type": "string", "format": "uuid"},
    "username": {"type": "string", "minLength": 3, "maxLength": 20},
    "email": {"type": "string", "format": "email"},
    "age": {"type": "integer", "minimum": 13, "maximum": 120},
    "bio": {"type": ["string", "null"], "maxLength": 280},
    "created_at": {"type": "string", "format": "date-time"},
    "verified": BOOL,
}), [
    {"id": "3f1c9a2e-8b7d-4c6a-9e5f-0a1b2c3d4e5f", "username": "ada_l", "email": "ada@example.com", "age": 36,
     "bio": "Mathematician. Writes notes on the Analytical Engine.", "created_at": "2024-03-01T09:15:00Z",
     "verified": True},
    {"id": "00000000-0000-4000-8000-000000000000", "username": "bob", "email": "bob.smith+tag@mail.example.org",
     "age": 13, "bio": None, "created_at": "2025-12-31T23:59:59.123+02:00", "verified": False},
    {"id": "9b2e4f60-1d3c-4e8a-b7f9-6a5c4d3e2f10", "username": "grace_hopper_1906", "email": "g.hopper@navy.mil",
     "age": 85, "bio": "COBOL, compilers, and a moth in a relay.", "created_at": "1992-01-01T00:00:00Z",
     "verified": True},
])

# 2. e-commerce order: nested objects, array of objects, enums, number bounds, pattern
addr = obj({"line1": STR, "line2": {"type": ["string", "null"]}, "city": STR, "postal_code": STR,
            "country": {"type": "string", "enum": ["US", "GB", "DE", "FR", "JP", "BR", "IN"]}})
add("order", obj({
    "order_id": {"type": "string", "minLength": 8, "maxLength": 32},
    "customer": obj({"id": INT, "name": STR, "email": {"type": "string", "format": "email"}}),
    "items": {"type": "array", "minItems": 1, "items": obj({
        "sku": {"type": "string", "pattern": "^[A-Z]{2,4}-[A-Z0-9-]+$"}, "name": STR,
        "quantity": {"type": "integer", "minimum": 1, "maximum": 999},
        "unit_price": {"type": "number", "minimum": 0}})},
    "currency": {"enum": ["USD", "EUR", "GBP", "JPY"]},
    "status": {"enum": ["pending", "paid", "shipped", "delivered", "cancelled"]},
    "shipping_address": addr,
    "total": {"type": "number", "minimum": 0},
}), [
    {"order_id": "ORD-2024-000123", "customer": {"id": 4412, "name": "Maria Garcia", "email": "maria@example.es"},
     "items": [{"sku": "TSH-BLK-M", "name": "T-shirt, black, M", "quantity": 2, "unit_price": 19.99},
               {"sku": "MUG-001", "name": "Coffee mug", "quantity": 1, "unit_price": 8.5}],
     "currency": "EUR", "status": "paid",
     "shipping_address": {"line1": "Calle Mayor 5", "line2": None, "city": "Madrid", "postal_code": "28013",
                          "country": "DE"}, "total": 48.48},
    {"order_id": "A1B2C3D4", "customer": {"id": 1, "name": "Li Wei", "email": "li.wei@example.cn"},
     "items": [{"sku": "BOOK-978-0262033848", "name": "Introduction to Algorithms", "quantity": 1,
                "unit_price": 89}],
     "currency": "USD", "status": "shipped",
     "shipping_address": {"line1": "1 Infinite Loop", "line2": "Building 3, Floor 2", "city": "Cupertino",
                          "postal_code": "95014", "country": "US"}, "total": 89},
    {"order_id": "ORD-JP-77777777", "customer": {"id": 99001, "name": "山田太郎", "email": "taro@example.jp"},
     "items": [{"sku": "CAM-X100", "name": "Camera", "quantity": 1, "unit_price": 129800},
               {"sku": "SD-64", "name": "SD card 64GB", "quantity": 3, "unit_price": 1980},
               {"sku": "BAG-S", "name": "Bag", "quantity": 1, "unit_price": 4500}],
     "currency": "JPY", "status": "pending",
     "shipping_address": {"line1": "1-1 Chiyoda", "line2": None, "city": "Tokyo", "postal_code": "100-0001",
                          "country": "JP"}, "total": 140240},
])

# 3. issue tracker: long free text, optional members, nullable object
add("github_issue", obj({
    "title": {"type": "string", "minLength": 1, "maxLength": 256},
    "body": STR,
    "labels": {"type": "array", "items": {"enum": ["bug", "enhancement", "question", "docs", "performance"]},
               "maxItems": 5},
    "state": {"enum": ["open", "closed"]},
    "assignee": {"anyOf": [obj({"login": STR, "id": INT}), {"type": "null"}]},
    "milestone": {"type": "integer", "minimum": 1},
}, required=["title", "body", "labels", "state"]), [
    {"title": "Mask computation is slow on large vocabularies",
     "body": LOREM, "labels": ["performance", "bug"], "state": "open",
     "assignee": {"login": "octocat", "id": 583231}, "milestone": 14},
    {"title": "Docs: explain strict mode", "body": "The README should say what `strict: true` changes.",
     "labels": [], "state": "closed"},
    {"title": "Crash on empty schema", "body": "Steps:\n1. POST {}\n2. See the 500.\n\nExpected: 400.",
     "labels": ["bug"], "state": "open", "assignee": None},
])

# 4. weather forecast: bounded numbers, date format, array bounds
add("weather_forecast", obj({
    "location": obj({"name": STR, "lat": {"type": "number", "minimum": -90, "maximum": 90},
                     "lon": {"type": "number", "minimum": -180, "maximum": 180}}),
    "units": {"enum": ["metric", "imperial"]},
    "days": {"type": "array", "minItems": 1, "maxItems": 7, "items": obj({
        "date": {"type": "string", "format": "date"},
        "high": {"type": "number", "minimum": -100, "maximum": 150},
        "low": {"type": "number", "minimum": -100, "maximum": 150},
        "condition": {"enum": ["sunny", "cloudy", "rain", "snow", "storm", "fog"]},
        "precipitation_chance": {"type": "integer", "minimum": 0, "maximum": 100}})},
}), [
    {"location": {"name": "Berlin", "lat": 52.52, "lon": 13.405}, "units": "metric",
     "days": [{"date": "2026-12-07", "high": 4.5, "low": -1.2, "condition": "cloudy", "precipitation_chance": 30},
              {"date": "2026-12-08", "high": 3, "low": -2, "condition": "snow", "precipitation_chance": 80},
              {"date": "2026-12-09", "high": 6.1, "low": 0.4, "condition": "rain", "precipitation_chance": 65}]},
    {"location": {"name": "Phoenix, AZ", "lat": 33.4484, "lon": -112.074}, "units": "imperial",
     "days": [{"date": "2026-07-04", "high": 112, "low": 88, "condition": "sunny", "precipitation_chance": 0}]},
    {"location": {"name": "Ushuaia", "lat": -54.8019, "lon": -68.303}, "units": "metric",
     "days": [{"date": "2026-01-0%d" % d, "high": 9.5 + d, "low": 2.25, "condition": c, "precipitation_chance": 10 * d}
              for d, c in zip(range(1, 8), ["fog", "rain", "storm", "cloudy", "sunny", "rain", "snow"])]},
])

# 5. function-call arguments: search tool
add("tool_search_args", obj({
    "query": {"type": "string", "minLength": 1},
    "filters": obj({"site": {"type": ["string", "null"]},
                    "after": {"type": ["string", "null"], "format": "date"},
                    "language": {"enum": ["en", "de", "fr", "es", "ja", "zh", None]}}),
    "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
    "safe_search": BOOL,
}), [
    {"query": "best practices for JSON schema validation", "filters": {"site": None, "after": "2024-01-01",
                                                                        "language": "en"}, "top_k": 10,
     "safe_search": True},
    {"query": "Rezept Apfelstrudel", "filters": {"site": "chefkoch.de", "after": None, "language": "de"},
     "top_k": 3, "safe_search": False},
    {"query": "東京 天気", "filters": {"site": None, "after": None, "language": None}, "top_k": 50,
     "safe_search": True},
], strict=True)

# 6. discriminated union: const + anyOf, prefixItems
point = {"type": "array", "prefixItems": [NUM, NUM], "items": False, "minItems": 2}
add("shape_union", obj({
    "shapes": {"type": "array", "items": {"anyOf": [
        obj({"kind": {"const": "circle"}, "center": point, "radius": {"type": "number", "exclusiveMinimum": 0}}),
        obj({"kind": {"const": "rect"}, "origin": point, "width": {"type": "number", "minimum": 0},
             "height": {"type": "number", "minimum": 0}}),
        obj({"kind": {"const": "polygon"}, "points": {"type": "array", "items": point, "minItems": 3}}),
    ]}},
    "fill": {"type": ["string", "null"]},
}), [
    {"shapes": [{"kind": "circle", "center": [0, 0], "radius": 1.5},
                {"kind": "rect", "origin": [-2.5, 3], "width": 10, "height": 4.25}], "fill": "#ff8800"},
    {"shapes": [{"kind": "polygon", "points": [[0, 0], [4, 0], [2, 3.4641]]}], "fill": None},
    {"shapes": [], "fill": "none"},
    {"shapes": [{"kind": "circle", "center": [12.5, -7.75], "radius": 0.001},
                {"kind": "polygon", "points": [[1, 1], [2, 1], [2, 2], [1, 2], [0.5, 1.5]]},
                {"kind": "rect", "origin": [0, 0], "width": 0, "height": 0}], "fill": "rgba(0,0,0,0.5)"},
])

# 7. recursive tree via $ref/$defs
add("tree", {
    "$defs": {"node": obj({"name": STR, "size": {"type": "integer", "minimum": 0},
                           "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}})},
    "$ref": "#/$defs/node"}, [
    {"name": "/", "size": 0, "children": [
        {"name": "etc", "size": 4096, "children": [{"name": "hosts", "size": 220, "children": []},
                                                     {"name": "passwd", "size": 1732, "children": []}]},
        {"name": "home", "size": 4096, "children": [
            {"name": "ada", "size": 4096, "children": [{"name": "notes.md", "size": 12034, "children": []}]}]}]},
    {"name": "leaf", "size": 1, "children": []},
    {"name": "a", "size": 1, "children": [{"name": "b", "size": 2, "children": [
        {"name": "c", "size": 3, "children": [{"name": "d", "size": 4, "children": []}]}]}]},
])

# 8. OpenAI's UI example: recursive, enum, array of attribute objects
add("ui_component", {
    "$defs": {"ui": obj({
        "type": {"enum": ["div", "button", "header", "section", "field", "form"]},
        "label": STR,
        "children": {"type": "array", "items": {"$ref": "#/$defs/ui"}},
        "attributes": {"type": "array", "items": obj({"name": STR, "value": STR})}})},
    "$ref": "#/$defs/ui"}, [
    {"type": "form", "label": "Sign up", "children": [
        {"type": "field", "label": "Email", "children": [], "attributes": [{"name": "type", "value": "email"},
                                                                           {"name": "required", "value": "true"}]},
        {"type": "field", "label": "Password", "children": [], "attributes": [{"name": "type", "value": "password"}]},
        {"type": "button", "label": "Create account", "children": [], "attributes": [{"name": "type",
                                                                                     "value": "submit"}]}],
     "attributes": [{"name": "action", "value": "/signup"}, {"name": "method", "value": "post"}]},
    {"type": "header", "label": "Welcome", "children": [], "attributes": []},
], strict=True)

# 9. JSON-like expression AST: recursion through anyOf with const tags
add("expr_ast", {
    "$defs": {"expr": {"anyOf": [
        obj({"op": {"const": "num"}, "value": NUM}),
        obj({"op": {"const": "var"}, "name": {"type": "string", "minLength": 1, "maxLength": 16}}),
        obj({"op": {"enum": ["add", "sub", "mul", "div"]}, "args": {"type": "array", "minItems": 2,
                                                                   "items": {"$ref": "#/$defs/expr"}}}),
        obj({"op": {"const": "call"}, "fn": {"enum": ["sin", "cos", "exp", "log"]},
             "arg": {"$ref": "#/$defs/expr"}})]}},
    "$ref": "#/$defs/expr"}, [
    {"op": "add", "args": [{"op": "num", "value": 1}, {"op": "mul", "args": [{"op": "var", "name": "x"},
                                                                          {"op": "num", "value": 2.5}]}]},
    {"op": "call", "fn": "sin", "arg": {"op": "div", "args": [{"op": "var", "name": "theta"},
                                                              {"op": "num", "value": -2}]}},
    {"op": "var", "name": "y"},
])

# 10. calendar event: date-time, email arrays, nullable enum
add("calendar_event", obj({
    "title": {"type": "string", "maxLength": 100},
    "start": {"type": "string", "format": "date-time"},
    "end": {"type": "string", "format": "date-time"},
    "all_day": BOOL,
    "attendees": {"type": "array", "items": {"type": "string", "format": "email"}, "maxItems": 20},
    "location": {"type": ["string", "null"]},
    "recurrence": {"enum": ["daily", "weekly", "monthly", "yearly", None]},
    "reminder_minutes": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 40320}},
}), [
    {"title": "Weekly sync", "start": "2026-12-08T10:00:00+01:00", "end": "2026-12-08T10:30:00+01:00",
     "all_day": False, "attendees": ["ana@example.com", "ben@example.com", "chen@example.org"],
     "location": "Room 4.12", "recurrence": "weekly", "reminder_minutes": [10]},
    {"title": "Conference", "start": "2027-03-15T00:00:00Z", "end": "2027-03-18T00:00:00Z", "all_day": True,
     "attendees": [], "location": None, "recurrence": None, "reminder_minutes": [1440, 60]},
    {"title": "Dentist", "start": "2026-12-21T14:45:00.000-05:00", "end": "2026-12-21T15:30:00.000-05:00",
     "all_day": False, "attendees": ["me@example.net"], "location": "12 Main St", "recurrence": None,
     "reminder_minutes": []},
])

# 11. product catalog: prefixItems tuple, tags, integer bounds, optional members
add("product_catalog", obj({
    "products": {"type": "array", "items": obj({
        "id": {"type": "integer", "minimum": 1},
        "title": {"type": "string", "minLength": 1, "maxLength": 120},
        "price": {"type": "number", "minimum": 0, "maximum": 100000},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 8},
        "dimensions_cm": {"type": "array", "prefixItems": [NUM, NUM, NUM], "items": False},
        "in_stock": BOOL,
        "rating": {"type": ["number", "null"], "minimum": 0, "maximum": 5},
    }, required=["id", "title", "price", "in_stock"])},
    "page": {"type": "integer", "minimum": 1},
    "has_more": BOOL,
}), [
    {"products": [{"id": 101, "title": "Ergonomic chair", "price": 249.99, "tags": ["office", "furniture"],
                   "dimensions_cm": [65, 70, 120.5], "in_stock": True, "rating": 4.6},
                  {"id": 102, "title": "Desk lamp", "price": 34, "in_stock": False, "rating": None},
                  {"id": 103, "title": "USB-C hub, 7 ports", "price": 45.5, "tags": ["electronics"],
                   "in_stock": True}],
     "page": 1, "has_more": True},
    {"products": [], "page": 7, "has_more": False},
    {"products": [{"id": 9, "title": "Standing desk \"Pro\"", "price": 699, "tags": [],
                   "dimensions_cm": [160, 80, 72], "in_stock": True, "rating": 5}], "page": 2, "has_more": False},
])

# 12. log entry: additional properties allowed (non-strict), free text
add("log_entry", {
    "type": "object",
    "properties": {
        "timestamp": {"type": "string", "format": "date-time"},
        "level": {"enum": ["trace", "debug", "info", "warn", "error", "fatal"]},
        "service": STR,
        "message": STR,
        "context": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
    },
    "required": ["timestamp", "level", "message"],
}, [
    {"timestamp": "2026-12-07T12:00:01.250Z", "level": "error", "service": "api-gateway",
     "message": "upstream timed out after 30000 ms (attempt 3/3); giving up",
     "context": {"route": "/v1/chat/completions", "status": 504, "retry": False}},
    {"timestamp": "2026-12-07T12:00:02Z", "level": "info", "message": "ready",
     "context": {}, "pid": 4242, "host": "node-7"},
    {"timestamp": "2026-12-07T12:00:03Z", "level": "debug", "service": "scheduler",
     "message": "step: 12 running, 3 waiting, KV 71% used"},
])

# 13. classification: enum, bounded number, long rationale
add("sentiment", obj({
    "label": {"enum": ["positive", "negative", "neutral", "mixed"]},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "aspects": {"type": "array", "items": obj({"aspect": STR, "sentiment": {"enum": ["positive", "negative",
                                                                                     "neutral"]}})},
    "rationale": {"type": "string", "maxLength": 2000},
}), [
    {"label": "mixed", "confidence": 0.82, "aspects": [{"aspect": "battery life", "sentiment": "positive"},
                                                      {"aspect": "screen", "sentiment": "negative"}],
     "rationale": "The reviewer praises the battery (\"lasts two days\") but says the screen is dim outdoors "
                  "and scratches easily. Overall the tone is balanced, so the label is mixed rather than "
                  "positive or negative."},
    {"label": "positive", "confidence": 1, "aspects": [], "rationale": "Five stars, no complaints."},
    {"label": "negative", "confidence": 0.125, "aspects": [{"aspect": "delivery", "sentiment": "negative"}],
     "rationale": LOREM},
], strict=True)

# 14. named entities
add("entities", obj({
    "text_id": {"type": "string", "format": "uuid"},
    "entities": {"type": "array", "items": obj({
        "text": {"type": "string", "minLength": 1},
        "type": {"enum": ["PERSON", "ORG", "LOC", "DATE", "MONEY", "PRODUCT"]},
        "start": {"type": "integer", "minimum": 0},
        "end": {"type": "integer", "minimum": 0}})},
}), [
    {"text_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "entities": [
        {"text": "Ada Lovelace", "type": "PERSON", "start": 0, "end": 12},
        {"text": "London", "type": "LOC", "start": 27, "end": 33},
        {"text": "10 December 1815", "type": "DATE", "start": 37, "end": 53}]},
    {"text_id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "entities": []},
    {"text_id": "f47ac10b-58cc-4372-a567-0e02b2c3d479", "entities": [
        {"text": "Apple", "type": "ORG", "start": 0, "end": 5}, {"text": "$3 trillion", "type": "MONEY",
                                                                  "start": 22, "end": 33},
        {"text": "iPhone 15", "type": "PRODUCT", "start": 50, "end": 59}]},
])

# 15. invoice: dates, bounds, booleans, nested arrays
add("invoice", obj({
    "invoice_number": {"type": "string", "minLength": 4, "maxLength": 20},
    "issue_date": {"type": "string", "format": "date"},
    "due_date": {"type": "string", "format": "date"},
    "seller": obj({"name": STR, "vat_id": {"type": ["string", "null"]}}),
    "buyer": obj({"name": STR, "vat_id": {"type": ["string", "null"]}}),
    "lines": {"type": "array", "minItems": 1, "items": obj({
        "description": STR, "quantity": {"type": "number", "exclusiveMinimum": 0},
        "unit_price": NUM, "tax_rate": {"type": "number", "minimum": 0, "maximum": 0.5}})},
    "paid": BOOL,
}), [
    {"invoice_number": "INV-0042", "issue_date": "2026-11-30", "due_date": "2026-12-30",
     "seller": {"name": "Acme GmbH", "vat_id": "DE123456789"}, "buyer": {"name": "Beta SARL", "vat_id": None},
     "lines": [{"description": "Consulting, November", "quantity": 12.5, "unit_price": 120, "tax_rate": 0.19},
               {"description": "Travel", "quantity": 1, "unit_price": 342.1, "tax_rate": 0}], "paid": False},
    {"invoice_number": "2026/17", "issue_date": "2026-02-28", "due_date": "2026-03-31",
     "seller": {"name": "Jane Doe", "vat_id": None}, "buyer": {"name": "ACME Corp.", "vat_id": "US-99-1234567"},
     "lines": [{"description": "Logo design", "quantity": 1, "unit_price": 850, "tax_rate": 0.2}], "paid": True},
])

# 16. chat message with tool calls (OpenAI-like)
add("chat_message", obj({
    "role": {"const": "assistant"},
    "content": {"type": ["string", "null"]},
    "tool_calls": {"type": "array", "items": obj({
        "id": {"type": "string", "minLength": 1, "maxLength": 40},
        "type": {"const": "function"},
        "function": obj({"name": {"enum": ["get_weather", "search", "send_email", "create_event"]},
                         "arguments": STR})})},
    "refusal": {"type": ["string", "null"]},
}), [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_abc123", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}},
        {"id": "call_def456", "type": "function",
         "function": {"name": "search", "arguments": "{\"query\":\"Paris events this weekend\"}"}}],
     "refusal": None},
    {"role": "assistant", "content": "Sure - here is the summary you asked for.", "tool_calls": [],
     "refusal": None},
    {"role": "assistant", "content": None, "tool_calls": [], "refusal": "I can't help with that request."},
], strict=True)

# 17. math reasoning (OpenAI's structured-outputs example)
add("math_reasoning", obj({
    "steps": {"type": "array", "items": obj({"explanation": STR, "output": STR})},
    "final_answer": STR,
}), [
    {"steps": [{"explanation": "Start with the equation 8x + 7 = -23.", "output": "8x + 7 = -23"},
               {"explanation": "Subtract 7 from both sides to isolate the term with the variable.",
                "output": "8x = -23 - 7"},
               {"explanation": "Simplify the right side.", "output": "8x = -30"},
               {"explanation": "Divide both sides by 8 to solve for x.", "output": "x = -30 / 8"},
               {"explanation": "Simplify the fraction.", "output": "x = -15 / 4"}],
     "final_answer": "x = -15/4 = -3.75"},
    {"steps": [{"explanation": "The derivative of x^2 is 2x; evaluate at x = 3.", "output": "f'(3) = 6"}],
     "final_answer": "6"},
], strict=True)

# 18. database query builder: anyOf of scalar types, enums, bounds
add("db_query", obj({
    "table": {"enum": ["users", "orders", "products", "events"]},
    "columns": {"type": "array", "minItems": 1, "items": STR},
    "where": {"type": "array", "items": obj({
        "column": STR, "op": {"enum": ["=", "!=", "<", "<=", ">", ">=", "in", "like"]},
        "value": {"anyOf": [STR, NUM, BOOL, {"type": "null"}, {"type": "array", "items": STR}]}})},
    "order_by": {"anyOf": [obj({"column": STR, "desc": BOOL}), {"type": "null"}]},
    "limit": {"type": "integer", "minimum": 1, "maximum": 10000},
}), [
    {"table": "orders", "columns": ["id", "total", "created_at"],
     "where": [{"column": "status", "op": "in", "value": ["paid", "shipped"]},
               {"column": "total", "op": ">=", "value": 100.5}],
     "order_by": {"column": "created_at", "desc": True}, "limit": 50},
    {"table": "users", "columns": ["*"], "where": [{"column": "email", "op": "like", "value": "%@example.com"},
                                                   {"column": "deleted", "op": "=", "value": False},
                                                   {"column": "manager_id", "op": "=", "value": None}],
     "order_by": None, "limit": 10000},
])

# 19. resume: long text, nested arrays, nullable dates
add("resume", obj({
    "name": STR,
    "email": {"type": "string", "format": "email"},
    "summary": {"type": "string", "maxLength": 1500},
    "experience": {"type": "array", "items": obj({
        "company": STR, "title": STR, "start": {"type": "string", "format": "date"},
        "end": {"type": ["string", "null"], "format": "date"},
        "highlights": {"type": "array", "items": STR, "maxItems": 6}})},
    "skills": {"type": "array", "items": STR, "minItems": 1, "maxItems": 30},
}), [
    {"name": "Dana Kim", "email": "dana.kim@example.com",
     "summary": "Backend engineer with eight years of experience building low-latency services in C, Go and "
                "Rust. Led the migration of a payments platform to an event-sourced design; cares about "
                "observability, careful benchmarking and code that the next person can read.",
     "experience": [{"company": "Fintech Co", "title": "Staff Engineer", "start": "2021-04-01", "end": None,
                     "highlights": ["Cut p99 latency from 180 ms to 35 ms", "Mentored six engineers"]},
                    {"company": "StartUp Inc.", "title": "Software Engineer", "start": "2017-09-15",
                     "end": "2021-03-31", "highlights": ["Built the billing service from scratch"]}],
     "skills": ["C", "Go", "Rust", "PostgreSQL", "Kafka", "Kubernetes"]},
    {"name": "Élodie Martin", "email": "elodie@example.fr", "summary": "Data scientist.",
     "experience": [], "skills": ["Python"]},
])

# 20. movie review: integer/number bounds, long text, booleans
add("movie_review", obj({
    "title": STR,
    "year": {"type": "integer", "minimum": 1888, "maximum": 2030},
    "rating": {"type": "number", "minimum": 0, "maximum": 10},
    "genres": {"type": "array", "items": {"enum": ["drama", "comedy", "action", "sci-fi", "horror", "documentary",
                                                   "animation", "romance", "thriller"]}, "minItems": 1},
    "review": {"type": "string", "minLength": 50},
    "contains_spoilers": BOOL,
}), [
    {"title": "Metropolis", "year": 1927, "rating": 9.1, "genres": ["drama", "sci-fi"],
     "review": "Fritz Lang's silent epic still astonishes: the city's towers, the machine that becomes Moloch, "
               "and Brigitte Helm's double role. The restored 2010 version brings back almost all of the lost "
               "footage, and the story finally makes sense.", "contains_spoilers": False},
    {"title": "Spirited Away", "year": 2001, "rating": 10, "genres": ["animation"],
     "review": LOREM, "contains_spoilers": True},
    {"title": "The Room", "year": 2003, "rating": 1.5, "genres": ["drama", "comedy", "romance"],
     "review": "So bad it is good; watch it with friends. \"Oh hi Mark.\" Every line is quotable for the "
               "wrong reasons.", "contains_spoilers": False},
])

# 21. server config: nested objects, exclusive bounds, time format, enums
add("service_config", obj({
    "name": {"type": "string", "minLength": 1, "maxLength": 63},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "replicas": {"type": "integer", "minimum": 1, "maximum": 100},
    "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    "log_level": {"enum": ["debug", "info", "warn", "error"]},
    "maintenance_window": obj({"day": {"enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
                               "start": {"type": "string", "format": "time"}}),
    "features": obj({"tls": BOOL, "http2": BOOL, "compression": {"enum": ["none", "gzip", "br", "zstd"]}}),
    "env": {"type": "array", "items": {"type": "array", "prefixItems": [STR, STR], "items": False,
                                       "minItems": 2}},
}), [
    {"name": "mfaserve", "port": 8080, "replicas": 3, "timeout_s": 30, "log_level": "info",
     "maintenance_window": {"day": "sun", "start": "03:00:00Z"},
     "features": {"tls": True, "http2": True, "compression": "zstd"},
     "env": [["MFASERVE_MODEL", "/models/default"], ["MFASERVE_THREADS", "16"]]},
    {"name": "x", "port": 1, "replicas": 100, "timeout_s": 0.25, "log_level": "debug",
     "maintenance_window": {"day": "wed", "start": "23:30:00+05:30"},
     "features": {"tls": False, "http2": False, "compression": "none"}, "env": []},
])

# 22. API payload, large flat object with many optional members, pattern
add("signup_form", obj({
    "first_name": {"type": "string", "minLength": 1, "maxLength": 50},
    "last_name": {"type": "string", "minLength": 1, "maxLength": 50},
    "email": {"type": "string", "format": "email"},
    "birth_date": {"type": "string", "format": "date"},
    "country": {"enum": ["US", "CA", "MX", "GB", "IE", "FR", "DE", "ES", "IT", "NL", "SE", "JP", "KR", "IN",
                         "AU", "NZ", "BR", "AR", "ZA", "NG"]},
    "phone": {"type": ["string", "null"], "maxLength": 20},
    "newsletter": BOOL,
    "referral_code": {"type": "string", "pattern": "^[A-Z0-9]{6}$"},
    "interests": {"type": "array", "items": {"enum": ["music", "sports", "tech", "travel", "food", "art"]},
                  "maxItems": 6},
}, required=["first_name", "last_name", "email", "country", "newsletter"]), [
    {"first_name": "Sam", "last_name": "Okafor", "email": "sam.okafor@example.ng", "birth_date": "1990-05-17",
     "country": "NG", "phone": "+234 803 555 0100", "newsletter": True, "interests": ["music", "tech"]},
    {"first_name": "Zoë", "last_name": "Ng", "email": "zoe@example.co.nz", "country": "NZ", "newsletter": False},
    {"first_name": "Jürgen", "last_name": "Müller-Lüdenscheidt", "email": "jm@example.de",
     "birth_date": "1958-02-28", "country": "DE", "phone": None, "newsletter": False, "referral_code": "AB12CD",
     "interests": ["travel", "food", "art"]},
])


def dump(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "schemas.jsonl")
    lines = []
    for e in S:
        lines.append(dump({"name": e["name"], "strict": e["strict"], "schema": e["schema"],
                           "instances": [dump(i) for i in e["instances"]]}))
    with open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    n = sum(len(e["instances"]) for e in S)
    print(f"{out}: {len(S)} schemas, {n} instances")
    ajv = os.environ.get("AJV_DIR")
    if ajv:
        js = r"""
const Ajv = require('ajv/dist/2020'); const addFormats = require('ajv-formats');
const fs = require('fs'); let bad = 0;
for (const line of fs.readFileSync(process.argv[1], 'utf8').split('\n').filter(Boolean)) {
  const e = JSON.parse(line); const ajv = new Ajv({strict: false}); addFormats(ajv);
  const v = ajv.compile(e.schema);
  e.instances.forEach((t, i) => { if (!v(JSON.parse(t))) { bad++;
    console.log(e.name, i, JSON.stringify(v.errors)); } });
}
process.exit(bad ? 1 : 0);"""
        r = subprocess.run(["node", "-e", js, out], cwd=ajv)
        print("ajv:", "all instances valid" if r.returncode == 0 else "INVALID instances above")
        sys.exit(r.returncode)


if __name__ == "__main__":
    main()
