#!/usr/bin/env python3
"""Validates a JSON document against a JSON schema (draft 7), with the other schemas of the
schema's folder available to its $refs by their $id. Prints every violation, one per line, and
exits 1 when there is any.

    validate-json-schema.py SCHEMA DOCUMENT
"""
import json
import pathlib
import sys

import jsonschema


def main():
    schema_path, document_path = map(pathlib.Path, sys.argv[1:3])
    schemas = {}
    for path in schema_path.parent.glob("*.json"):
        loaded = json.loads(path.read_text())
        schemas[loaded.get("$id", path.name)] = loaded
    schema = json.loads(schema_path.read_text())
    document = json.loads(document_path.read_text())
    try:  # jsonschema 4.18 and later resolve $refs through a registry
        from referencing import Registry, Resource
        registry = Registry().with_resources(
            (uri, Resource.from_contents(contents)) for uri, contents in schemas.items())
        validator = jsonschema.Draft7Validator(schema, registry=registry)
    except ImportError:  # Debian 12's 4.10
        resolver = jsonschema.RefResolver.from_schema(schema, store=schemas)
        validator = jsonschema.Draft7Validator(schema, resolver=resolver)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.absolute_path))
    for error in errors:
        print("/".join(map(str, error.absolute_path)) + ": " + error.message)
    sys.exit(1 if errors else 0)


main()
