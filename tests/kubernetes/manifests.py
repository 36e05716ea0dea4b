"""What tests/kubernetes.rs asks of Python, run with the interpreter of the
kubernetes-validate environment (which brings PyYAML and jsonschema):

  manifests.py json FILE...       every document of the files, as one JSON
                                  array of {"file": FILE, "doc": DOCUMENT}
  manifests.py crd CRD FILE...    validates the documents of the kind CRD
                                  defines against its schema, strictly (a
                                  field the schema does not name is an error,
                                  as the API server would drop it); prints
                                  one line per document checked

Exit status 1 when a document does not validate, 2 on bad usage."""

import json
import sys

import jsonschema
import yaml


def documents(files):
    for name in files:
        with open(name) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    yield name, doc


def strict(schema):
    """The schema with every object closed to fields it does not name,
    unless it says it keeps unknown fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def check_crd(crd_file, files):
    crd = next(doc for _, doc in documents([crd_file]))
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    schemas = {
        "%s/%s" % (group, v["name"]): strict(v["schema"]["openAPIV3Schema"])
        for v in spec["versions"]
        if v.get("served")
    }
    failed = 0
    checked = 0
    for name, doc in documents(files):
        if doc.get("kind") != kind:
            continue
        checked += 1
        label = "%s %s/%s" % (name, kind, doc.get("metadata", {}).get("name"))
        schema = schemas.get(doc.get("apiVersion"))
        if schema is None:
            print("ERROR %s: apiVersion %s is not served by the CRD (served: %s)"
                  % (label, doc.get("apiVersion"), ", ".join(sorted(schemas))))
            failed += 1
            continue
        # The schema leaves metadata to the API server: check what it needs.
        meta = doc.get("metadata") or {}
        errors = [] if meta.get("name") else ["metadata.name is missing"]
        if spec.get("scope") == "Namespaced" and not meta.get("namespace"):
            errors.append("metadata.namespace is missing")
        validator = jsonschema.Draft4Validator(schema)
        for e in validator.iter_errors(doc):
            errors.append("%s: %s" % (".".join(str(p) for p in e.absolute_path), e.message))
        if errors:
            failed += 1
            for e in errors:
                print("ERROR %s: %s" % (label, e))
        else:
            print("OK %s against %s" % (label, crd["metadata"]["name"]))
    if checked == 0:
        print("ERROR no %s in %s" % (kind, " ".join(files)))
        return 1
    return 1 if failed else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "json":
        print(json.dumps([{"file": n, "doc": d} for n, d in documents(argv[1:])]))
        return 0
    if len(argv) >= 3 and argv[0] == "crd":
        return check_crd(argv[1], argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
