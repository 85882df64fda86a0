"""Names vulture (`make lint`) reports as unused but something outside our code uses by name.

Each entry says who uses it. Only vulture reads this file; nothing imports or runs it.
"""

from typing import Any

_: Any = None  # stands for any object: vulture counts the attribute names below as used

_FALCON = (
    _.on_get,  # responders: Falcon calls on_<method> for each request
    _.on_post,  # responder, as above
    _.on_put,  # responder, as above
    _.on_patch,  # responder, as above
    _.on_delete,  # responder, as above
    _.on_get_asset,  # suffixed responder: add_route(..., suffix="asset")
    _.process_request,  # middleware hook, called by Falcon by name
    _.process_resource,  # middleware hook, as above
    _.process_response,  # middleware hook, as above
    _.process_response_async,  # middleware hook, as above
    _.process_startup,  # ASGI lifespan hook, as above
    _.process_shutdown,  # ASGI lifespan hook, as above
    _.media,  # resp.media: Falcon serialises what a responder sets
    _.strip_url_path_trailing_slash,  # router option Falcon reads
)

_GUNICORN = (
    _.worker_class,  # web/gunicorn_conf.py settings: gunicorn reads the config module by name
    _.graceful_timeout,  # gunicorn setting, as above
    _.keepalive,  # gunicorn setting, as above
    _.accesslog,  # gunicorn setting, as above
    _.errorlog,  # gunicorn setting, as above
    _.loglevel,  # gunicorn setting, as above
    _.proc_name,  # gunicorn setting, as above
    _.control_socket_disable,  # gunicorn setting, as above
    _.child_exit,  # gunicorn server hook, as above
    _.on_exit,  # gunicorn server hook, as above
    _.WebWorker,  # the worker class gunicorn loads from its dotted path (web/gunicorn_conf.py)
)

_DRAMATIQ = (
    _.before_enqueue,  # middleware hook, called by Dramatiq by name
    _.after_process_message,  # middleware hook, as above
    _.after_skip_message,  # middleware hook, as above
    _.before_worker_shutdown,  # middleware hook, as above
    _.after_worker_boot,  # middleware hook, as above
    _.forks,  # middleware property: Dramatiq forks these functions at start
)

_STANDARD_LIBRARY = (
    _.do_GET,  # http.server handlers: BaseHTTPRequestHandler dispatches do_<method>
    _.do_POST,  # http.server handler, as above
    _.log_message,  # http.server hook, overridden to keep the access log quiet
    _.daemon_threads,  # socketserver option read by ThreadingMixIn
    _.exc_type,  # __aexit__ parameters: the protocol passes all three
    _.traceback,  # __aexit__ parameter, as above
    _.KILL_WAIT,  # honcho.manager option scripts/procs.py sets
    _.set_protocol,  # asyncio transport methods uvicorn calls on a test's stand-in transport
    _.pause_reading,  # asyncio transport method, as above
    _.resume_reading,  # asyncio transport method, as above
    _.receive,  # ASGI app parameter: the server passes scope, receive and send
    _.compare_to,  # alembic include_object callback parameter (alembic/env.py)
    _.down_revision,  # alembic reads each migration's revision chain by name
    _.branch_labels,  # alembic migration attribute, as above
    _.depends_on,  # alembic migration attribute, as above
)

_SCHEMA = (
    _.GK,  # enum members: stored in Postgres and read back by value
    _.DEF,  # enum member, as above
    _.MID,  # enum member, as above
    _.FWD,  # enum member, as above
    _.auto_exit_ft,  # enum member, as above
    _.position_closed,  # enum member, as above
    _.referral_bonus,  # enum member, as above
    _.referral_milestone,  # enum member, as above
    _.overall,  # enum member, as above
    _.REPLAY,  # TickSource member: Lua writes the source as a number, read back by value
    _.ADMITTED,  # Admission member: built from the Lua reply by value (web/ws/limits.py)
    _.WalletLedger,  # mapped table: part of the schema Alembic and Postgres hold
    _.updated_at,  # mapped columns: written by SQL and Lua-fed upserts, not by attribute name
    _.entry_key,  # mapped column, as above
    _.balance_after,  # mapped column, as above
    _.close_seq,  # mapped column, as above
    _.margin_level,  # mapped column, as above
    _.taken_at,  # mapped column, as above
    _.last_error,  # mapped column, as above
    _.sent_at,  # mapped column, as above
    _.metadata,  # declarative base metadata: Alembic reads it
    _.short,  # enum member: stored in Postgres and read back by value
)

_TESTS = (
    _.pytestmark,  # pytest reads the module's marks by name
    _.collector_restored,  # pytest fixture, requested by parameter name
    _.lone_primary,  # pytest fixture, as above
    _.handle_DATA,  # aiosmtpd handler hook, called by name
    _.binary_location,  # selenium ChromeOptions attribute it reads
    _._is_iso_time,  # registered as a jsonschema format checker by its decorator
)

_MSGSPEC = (
    _.expires_in,  # field of a response Struct (an Answer): msgspec and the OpenAPI use it
    _.needs_profile,  # response Struct field, as above
    _.next_cursor,  # response Struct field, as above
    _.referred_count,  # response Struct field, as above
    _.paid_count,  # response Struct field, as above
    _.logged_in,  # response Struct field, as above
    _.enqueued,  # response Struct field, as above
    _.pad,  # tests/integration/test_web.py: a request Struct field msgspec decodes into
)
