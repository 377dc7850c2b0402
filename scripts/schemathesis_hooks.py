"""schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS)."""
import schemathesis


@schemathesis.hook
def filter_body(context, body):
    """A run's files have distinct names, which a JSON Schema cannot say of one property of
    an array's items (the document says it in words): the server refuses the rest with 422
    naming `files[i].name`. Generated bodies with a name twice are not tried."""
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, list):
        return True
    names = [f.get("name") for f in files if isinstance(f, dict)]
    return len(names) == len(set(map(repr, names)))
